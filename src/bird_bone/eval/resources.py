"""Size, speed and perplexity of every artifact a run reported, as one table: read from the reporting
JSONs under data/08_reporting/ (``*metrics*.json`` of the baseline, pruned and NOVAQ models and the
``export*.json`` reports of GGUF exports), whatever their nesting, by the names of their fields. A
report without a size (the pruned model's) gets the size of its checkpoint, models/<artifact>/, on disk."""

from __future__ import annotations

import json
from pathlib import Path

from bird_bone.bundle.changes import flatten

FIELDS = {  # column: field names in order of preference (the last component of a flattened key)
    "perplexity": ("perplexity",),
    "bits_per_weight": ("total_bits_per_weight", "bits_per_weight"),
    "bytes": ("bytes_on_disk", "file_bytes_without_manifest", "file_bytes", "bytes"),
    "tokens_per_second": ("tokens_per_second",),
    "parameters": ("parameters", "total_weights"),
}
REPORTS = "data/08_reporting"
WEIGHT_SUFFIXES = (".safetensors", ".gguf")


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
    return [p for p in files if "metrics" in p.name or p.name.startswith("export")]


def checkpoint_bytes(directory: Path) -> int | None:
    """Bytes of the weight files (safetensors, GGUF) under a checkpoint directory; None if it is absent."""
    if not directory.is_dir():
        return None
    return sum(p.stat().st_size for p in directory.rglob("*") if p.suffix in WEIGHT_SUFFIXES and p.is_file())


def collect_resources(run_dir: str | Path) -> list[dict]:
    """One row per reported artifact with a perplexity: name, source file and the FIELDS columns (None if absent)."""
    run_dir = Path(run_dir)
    rows = []
    for path in report_files(run_dir / REPORTS):
        flat = flatten(json.loads(path.read_text()))
        row = {"artifact": artifact_name(path), "file": path.name}
        row.update({column: pick(flat, names) for column, names in FIELDS.items()})
        if row["perplexity"] is None:
            continue
        if row["bytes"] is None:
            row["bytes"] = checkpoint_bytes(run_dir / "models" / row["artifact"])
        if row["bits_per_weight"] is None and row["bytes"] and row["parameters"]:
            row["bits_per_weight"] = 8 * row["bytes"] / row["parameters"]
        rows.append(row)
    return rows
