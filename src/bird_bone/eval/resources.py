"""Size, speed and perplexity of every artifact a run reported, as one table: read from the reporting
JSONs under data/08_reporting/ (``*metrics*.json`` of the baseline, one-shot pruned, loop-final and
NOVAQ models, the loop's per-wave records under ``waves/``, the low-rank report and the ``export*.json``
reports of GGUF exports), whatever their nesting, by the names of their fields. A report without a size
gets the size of its checkpoint on disk (links followed, pruning masks not counted)."""

from __future__ import annotations

import json
import math
from pathlib import Path

from safetensors import safe_open

from bird_bone.bundle.changes import flatten
from bird_bone.io.checkpoint import MASKS_FILE, weights_directory

FIELDS = {  # column: field names in order of preference (the last component of a flattened key)
    "perplexity": ("perplexity", "perplexity_after"),
    "sparsity": ("sparsity",),
    "bits_per_weight": ("total_bits_per_weight", "bits_per_weight"),
    "bytes": ("bytes_on_disk", "file_bytes_without_manifest", "file_bytes", "bytes"),
    "tokens_per_second": ("tokens_per_second",),
    "parameters": ("parameters", "parameters_after", "total_weights"),
}
REPORTS = "data/08_reporting"
WEIGHT_SUFFIXES = (".safetensors", ".gguf")
# artifact -> its checkpoint under models/, where the names differ
CHECKPOINTS = {"loop": "loop_final", "lowrank": "compressed"}


def pick(flat: dict, names: tuple[str, ...]) -> float | None:
    """The first numeric value whose key ends in one of ``names`` (in that order, shallowest key first)."""
    for name in names:
        keys = sorted((k for k in flat if k.split(".")[-1] == name), key=lambda k: k.count("."))
        for key in keys:
            value = flat[key]
            if isinstance(value, int | float) and not isinstance(value, bool):
                return float(value)
    return None


def artifact_name(path: Path) -> str:
    return path.stem.replace("_metrics", "").replace("_report", "") or path.stem


def report_files(report_dir: Path) -> list[Path]:
    files = sorted(Path(report_dir).glob("*.json"))
    keep = [p for p in files if "metrics" in p.name or p.name.startswith(("export", "lowrank"))]
    waves = sorted(Path(report_dir).glob("waves/wave_*.json"), key=lambda p: int(p.stem.split("_")[1]))
    return keep + waves


def checkpoint_directory(run_dir: Path, artifact: str) -> Path:
    if artifact.startswith("wave_"):
        return run_dir / "models" / "waves" / artifact
    return run_dir / "models" / CHECKPOINTS.get(artifact, artifact)


def _weight_files(directory: Path) -> list[Path]:
    if not directory.is_dir():
        return []
    directory = weights_directory(directory)
    return [p for p in directory.rglob("*") if p.suffix in WEIGHT_SUFFIXES and p.name != MASKS_FILE and p.is_file()]


def checkpoint_bytes(directory: Path) -> int | None:
    """Bytes of the weight files (safetensors, GGUF; not the masks) of a checkpoint; None if it is absent."""
    files = _weight_files(Path(directory))
    return sum(p.stat().st_size for p in files) if files else None


def checkpoint_parameters(directory: Path) -> int | None:
    """Weights stored in a checkpoint's safetensors files, counted from their headers."""
    files = [p for p in _weight_files(Path(directory)) if p.suffix == ".safetensors"]
    total = 0
    for path in files:
        with safe_open(path, "pt") as f:
            for key in f.keys():
                shape = f.get_slice(key).get_shape()
                total += math.prod(shape)
    return total or None


def collect_resources(run_dir: str | Path) -> list[dict]:
    """One row per reported artifact with a perplexity: name, source file and the FIELDS columns (None if absent).

    The low-rank report of a pass-through (nothing factorized) has no perplexity of its own: its
    checkpoint is the loop's final one, so it takes the loop's row.
    """
    run_dir = Path(run_dir)
    rows: dict[str, dict] = {}
    for path in report_files(run_dir / REPORTS):
        flat = flatten(json.loads(path.read_text()))
        row = {"artifact": artifact_name(path), "file": str(path.relative_to(run_dir / REPORTS))}
        row.update({column: pick(flat, names) for column, names in FIELDS.items()})
        if row["perplexity"] is None and row["artifact"] == "lowrank" and "loop" in rows:
            row.update({k: rows["loop"][k] for k in FIELDS if row[k] is None})
        if row["perplexity"] is None:
            continue
        directory = checkpoint_directory(run_dir, row["artifact"])
        if row["bytes"] is None:
            row["bytes"] = checkpoint_bytes(directory)
        if row["parameters"] is None:
            row["parameters"] = checkpoint_parameters(directory)
        if row["bits_per_weight"] is None and row["bytes"] and row["parameters"]:
            row["bits_per_weight"] = 8 * row["bytes"] / row["parameters"]
        rows[row["artifact"]] = row
    return list(rows.values())
