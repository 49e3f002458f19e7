"""Intel AutoRound's GGUF export of the embedded model, scored in llama.cpp: a peer for bird-bone's GGUFs.

    pip install -e ".[autoround]"        # the pinned optional extra (auto-round 0.16.1); make setup does not
    PYTHONPATH=src ../shared/cpu .venv/bin/python benchmarks/autoround_peer.py [--schemes q4_k_m q3_k_m q2_k_s]

Model: SmolLM2-135M-Instruct as embedded (Q4_1 weights dequantized to float32), written once as a
Hugging Face directory (``models/peers/smollm2-135m-hf``) for AutoRound to load. AutoRound quantizes
it with its own GGUF schemes (``format="gguf:q4_k_m"`` etc.) and writes the files itself; nothing is
downloaded: calibration is bird-bone's (32 random 512-token windows of WikiText-2 validation, seed 0,
``calibration_windows``) handed over as token tensors, and the hub is switched off.

Settings, as AutoRound recommends for GGUF (docs/step_by_step.md, "GGUF format": "The optimized RTN
mode is suggested (--iters 0) for all bits other than 3 bits"): ``iters=0`` for q4_k_m and q2_k_s,
which for K-quant targets is AutoRound's optimized RTN with an importance matrix from the calibration
windows. At 3 bits AutoRound advises tuning; its default, ``iters=200`` (lr 1/iters), took 42-44 s per
decoder block here after the first (88 s, torch.compile included), about 22 min for q3_k_m on 2 cores.
So q3_k_m runs AutoRound's own lighter recipe, its CLI's "light" settings: ``iters=50``, ``lr=5e-3``
(``iters={"q3_k_m": 200}`` runs the default). Every other setting is AutoRound's default (batch size 8,
torch.compile while tuning), except nsamples/seqlen, which are the 32 x 512 calibration windows.

Scoring: llama.cpp (``llama_perplexity``) on WikiText-2 raw test and the TinyStories slice, the first
32 non-overlapping 512-token windows of each (``evaluation_windows``; SmolLM2 adds no BOS). Bits per
weight: tensor bytes x 8 / parameters over every tensor of the file (``describe_gguf``).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import tempfile
import time
from pathlib import Path

import torch

from bird_bone.data.windows import bos_token, calibration_windows, evaluation_windows, tokenize_text
from bird_bone.errors import ArtifactError, BirdBoneError
from bird_bone.eval.llamacpp import llama_perplexity
from bird_bone.export.gguf import describe_gguf
from bird_bone.io.atomic import atomic_directory, atomic_path, atomic_write_text
from bird_bone.models.loading import load_model

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
PEERS = ROOT / "models" / "peers"  # ignored by git (models/*)
SCHEMES = ("q4_k_m", "q3_k_m", "q2_k_s")
# AutoRound's advice for GGUF: optimized RTN (iters 0) except at 3 bits, tuned there; its "light" recipe
# (iters 50, lr 5e-3) at 3 bits, because its default 200 iterations take ~22 min on 2 cores (module docstring).
SETTINGS = {"q4_k_m": {"iters": 0}, "q3_k_m": {"iters": 50, "lr": 5e-3}, "q2_k_s": {"iters": 0}}
TEXTS = {"WikiText-2": "wikitext2-raw-test.txt", "TinyStories": "tinystories-valid.txt"}

log = logging.getLogger(__name__)


def write_hf_dir(target: Path = PEERS / "smollm2-135m-hf", source: str = "smollm2-135m") -> Path:
    """``source`` (default the embedded SmolLM2, Q4_1 weights dequantized) as a Hugging Face directory
    (safetensors, config, tokenizer) at ``target``, written atomically once and reused after."""
    if (target / "config.json").is_file():
        return target
    loaded = load_model(source)
    with atomic_directory(target) as tmp:
        loaded.model.save_pretrained(tmp)
        loaded.tokenizer.save_pretrained(tmp)
    return target


def default_calibration(tokenizer, windows: int = 32, length: int = 512, seed: int = 0) -> torch.Tensor:
    """bird-bone's calibration windows [windows, length] from WikiText-2 validation (seed 0)."""
    tokens = tokenize_text(tokenizer, (DATA / "wikitext2-valid-tokenized.txt").read_text())
    return calibration_windows(tokens, length, windows, seed, "wikitext2-valid-tokenized.txt", bos_token(tokenizer))


def _offline() -> None:
    """AutoRound defaults to downloading pile-10k and may ask the hub for configs: forbid both."""
    for name in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
        os.environ[name] = "1"


def autoround_gguf(hf_dir: Path, target: Path, scheme: str, calibration, iters: int, lr: float | None = None) -> Path:
    """One AutoRound GGUF export of ``hf_dir`` at ``scheme`` (e.g. ``q4_k_m``), written to ``target``."""
    _offline()
    try:
        from auto_round import AutoRound
    except ImportError as exc:
        raise BirdBoneError(f"AutoRound is not installed ({exc}): `make autoround` installs the pinned extra") from exc
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(hf_dir)
    seqlen = calibration.shape[1] if isinstance(calibration, torch.Tensor) else 512
    dataset = list(calibration.split(1)) if isinstance(calibration, torch.Tensor) else list(calibration)
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{target.stem}-", dir=target.parent) as scratch:
        work = Path(scratch)
        quantizer = AutoRound(
            str(hf_dir),
            scheme=f"GGUF:{scheme.upper()}",
            tokenizer=tokenizer,
            dataset=dataset,
            nsamples=len(dataset),
            seqlen=seqlen,
            iters=iters,
            lr=lr,
            device_map="cpu",
        )
        quantizer.quantize_and_save(str(work), format=f"gguf:{scheme}")
        written = sorted(work.rglob("*.gguf"))
        if len(written) != 1:
            raise ArtifactError(f"AutoRound {scheme}: expected one GGUF under {work}, found {written}")
        with atomic_path(target) as tmp:
            written[0].replace(tmp)
    return target


def settings(scheme: str, iters: dict[str, int] | None = None, lr: float | None = None) -> dict:
    """AutoRound's iterations and learning rate for ``scheme``: ``SETTINGS``, or ``iters[scheme]`` at
    AutoRound's default lr (1/iters), and ``lr`` over either when given."""
    chosen = dict(SETTINGS.get(scheme, {"iters": 0}))
    if iters and scheme in iters:
        chosen = {"iters": iters[scheme]}
    if lr is not None:
        chosen["lr"] = lr
    return chosen


def file_name(scheme: str, chosen: dict) -> str:
    """``<scheme>-iters<N>[-lr<lr>].gguf``: one file per scheme and settings."""
    lr = f"-lr{chosen['lr']:g}" if chosen.get("lr") is not None else ""
    return f"{scheme}-iters{chosen['iters']}{lr}.gguf"


def autoround_ggufs(
    hf_dir: Path,
    out_dir: Path,
    schemes: list[str],
    calibration: torch.Tensor | list[str] | None = None,
    iters: dict[str, int] | None = None,
    lr: float | None = None,
    reuse: bool = True,
) -> dict[str, Path]:
    """AutoRound's GGUF export of the Hugging Face directory ``hf_dir`` at each of ``schemes``
    (``q4_k_m``, ``q3_k_m``, ``q2_k_s``, ...), as ``out_dir/<file_name>``, offline.

    ``calibration``: token windows [N, L] or texts; None: bird-bone's 32 x 512 WikiText-2 validation
    windows (seed 0). ``iters``, ``lr``: override ``SETTINGS`` (see ``settings`` and the module
    docstring). ``reuse``: keep a file already written for the same scheme and settings."""
    paths = {}
    for scheme in schemes:
        chosen = settings(scheme, iters, lr)
        target = Path(out_dir) / file_name(scheme, chosen)
        if not (reuse and target.is_file()):
            if calibration is None:  # only when a file is to be written
                from transformers import AutoTokenizer

                calibration = default_calibration(AutoTokenizer.from_pretrained(hf_dir))
            start = time.perf_counter()
            autoround_gguf(Path(hf_dir), target, scheme, calibration, chosen["iters"], chosen.get("lr"))
            log.info("AutoRound %s %s: %.0f s", scheme, chosen, time.perf_counter() - start)
        paths[scheme] = target
    return paths


def score(paths: dict[str, Path], tokenizer, windows: int = 32, threads: int = 2) -> list[dict]:
    """Per GGUF: bytes, bits per weight and llama.cpp perplexity on each of ``TEXTS``."""
    texts = {
        name: evaluation_windows(tokenize_text(tokenizer, (DATA / file).read_text()), 512, windows, file)
        for name, file in TEXTS.items()
    }
    rows = []
    for scheme, path in paths.items():
        scored = path.with_suffix(f".scores{windows}.json")  # kept beside the file: score each file once
        if scored.is_file() and scored.stat().st_mtime >= path.stat().st_mtime:
            rows.append(json.loads(scored.read_text()))
            continue
        described = describe_gguf(path)
        row = {"scheme": scheme, "file": path.name, "bytes": described.size_bytes}
        row["bits_per_weight"] = described.bits_per_weight
        row["tensor_types"] = described.tensor_types
        for name, test in texts.items():
            row[name] = llama_perplexity(path, test, threads).perplexity
        atomic_write_text(scored, json.dumps(row, indent=1))
        rows.append(row)
    return rows


def table(rows: list[dict]) -> str:
    lines = [
        "| scheme | file | bytes | bits/weight | ppl WikiText-2 | ppl TinyStories |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        lines.append(
            f"| {r['scheme']} | {r['file']} | {r['bytes']:,} | {r['bits_per_weight']:.2f} | "
            f"{r['WikiText-2']:.3f} | {r['TinyStories']:.3f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--schemes", nargs="*", default=list(SCHEMES))
    parser.add_argument("--iters", nargs="*", default=[], help="per scheme, e.g. q3_k_m=200 (default: SETTINGS)")
    parser.add_argument("--lr", type=float, help="learning rate of tuned schemes (default: SETTINGS, else 1/iters)")
    parser.add_argument("--out", type=Path, default=PEERS / "autoround")
    parser.add_argument("--windows", type=int, default=32)
    parser.add_argument("--no-score", action="store_true", help="only write the GGUFs")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO)
    torch.set_num_threads(2)
    hf_dir = write_hf_dir()
    iters = {k: int(v) for k, v in (item.split("=") for item in args.iters)}
    paths = autoround_ggufs(hf_dir, args.out, args.schemes, iters=iters, lr=args.lr)
    if not args.no_score:
        from transformers import AutoTokenizer

        rows = score(paths, AutoTokenizer.from_pretrained(hf_dir), args.windows)
        for r in rows:
            log.info("%s tensor types: %s", r["file"], r["tensor_types"])
        print(table(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
