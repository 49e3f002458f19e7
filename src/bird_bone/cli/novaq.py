"""``novaq``: compress a model with NOVAQ into a NOVAQ directory, and inspect, validate or benchmark one.

    novaq hf HuggingFaceTB/SmolLM2-135M-Instruct --output smollm2.novaq
    novaq ollama smollm2:135m            novaq local ./model.gguf        novaq url https://host/m.gguf
    novaq validate smollm2.novaq         novaq stats smollm2.novaq       novaq info smollm2.novaq
    novaq benchmark smollm2.novaq --original-model smollm2-135m

Environment: NOVAQ_CACHE_DIR (downloads and converted models), NOVAQ_NUM_THREADS (torch threads),
HF_TOKEN (gated hub models), OLLAMA_MODELS (Ollama store). Errors are one line on stderr, exit 1.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from bird_bone.cli import novaq_commands as commands
from bird_bone.cli.errors import USER_ERRORS, report_error
from bird_bone.errors import BirdBoneError

log = logging.getLogger("novaq")
SOURCES = {
    "hf": ("MODEL_ID", "a Hugging Face hub id (HF_TOKEN for gated models; offline: the local HF cache)"),
    "ollama": ("NAME[:TAG]", "a model pulled with Ollama (its GGUF blob in ~/.ollama/models or $OLLAMA_MODELS)"),
    "local": ("PATH", "a local Hugging Face directory, safetensors directory or GGUF file, or an embedded name"),
    "url": ("URL", "a GGUF file over http(s), downloaded with a size limit, resume and optional SHA-256"),
}


def _add_compress_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("NOVAQ parameters (override --config)")
    g.add_argument("--subspaces", type=int, help="weights per sub-vector (default 4)")
    g.add_argument("--codebook-size", type=int, help="K1, primary codebook entries (default 16)")
    g.add_argument("--residual-codebook-size", type=int, help="K2, residual codebook entries (default 4)")
    g.add_argument("--outlier-threshold", type=float, help="fraction of rows rescaled (default 0.01)")
    g.add_argument("--group-rows", type=int, help="rows of a codebook tile (0: all rows)")
    g.add_argument("--group-cols", type=int, help="columns of a codebook tile (0: all columns)")
    g.add_argument(
        "--hessian-aware",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="GPTVQ assignment with error feedback from calibration text (default on)",
    )
    g.add_argument("--activation-aware", action="store_true", default=None, help="weight k-means by E[x^2]")
    g.add_argument("--include-embeddings", action="store_true", default=None, help="quantize embeddings/head too")
    g.add_argument("--teacher-model", help="model spec of the refinement teacher (default: the original)")
    g.add_argument("--refine-steps", type=int, help="refinement iterations (0: no refinement; default 50)")
    g.add_argument(
        "--calibration-text", default="embedded", help="calibration text (Hessians, refinement; default: embedded)"
    )
    p.add_argument("--config", type=Path, help="YAML file of NOVAQ parameters (keys of novaq: in parameters_novaq.yml)")
    p.add_argument("--output", "-o", type=Path, help="NOVAQ directory to write (default: ./<model>.novaq)")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="novaq", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress details; full traceback on error")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (metavar, what) in SOURCES.items():
        p = sub.add_parser(name, help=f"compress {what}", description=f"Compress {what} with NOVAQ.")
        p.add_argument("source", metavar=metavar)
        if name == "url":
            p.add_argument("--max-bytes", type=int, default=8 << 30, help="refuse larger downloads (default 8 GiB)")
            p.add_argument("--sha256", help="expected SHA-256 of the downloaded file")
        _add_compress_options(p)
    for name, what in (("validate", "check hashes, decode and compare logits with the recorded ones"),
                       ("stats", "print compression statistics (bits per weight by kind, ratio vs fp16)"),
                       ("info", "print format version, model, tensors and NOVAQ parameters")):  # fmt: skip
        p = sub.add_parser(name, help=what, description=what.capitalize() + ".")
        p.add_argument("file", type=Path, metavar="FILE", help="a NOVAQ directory (or its manifest.json)")
        p.add_argument("--json", action="store_true", help="print JSON instead of text")
    p = sub.add_parser("benchmark", help="perplexity and speed of the NOVAQ model next to the original",
                       description="Perplexity (WikiText-style text) and forward tokens/s, side by side.")  # fmt: skip
    p.add_argument("file", type=Path, metavar="FILE")
    p.add_argument("--original-model", required=True, metavar="SPEC", help="model spec of the uncompressed model")
    p.add_argument("--text", default="embedded", help="evaluation text file (default: embedded)")
    p.add_argument("--windows", type=int, default=8)
    p.add_argument("--window-length", type=int, default=512)
    p.add_argument("--no-progress", action="store_true")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(message)s")
    try:
        import torch

        torch.set_num_threads(int(os.environ.get("NOVAQ_NUM_THREADS") or min(os.cpu_count() or 1, 8)))
        return commands.run(args)
    except (BirdBoneError, *USER_ERRORS) as exc:
        return report_error("novaq", exc, args.verbose)
    except KeyboardInterrupt:
        print("novaq: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
