"""Prune a Hugging Face safetensors model larger than memory, one decoder layer at a time, resumably.

    python scripts/stream_prune.py --source DIR --out models/pruned --method wanda --sparsity 0.5 \\
        --calibration ../shared/data/wikitext2-raw-test.txt --windows 128 --window-length 2048
    python scripts/stream_prune.py --source DIR --out models/pruned-2of4 --method sparsegpt --pattern 2:4 ...

The output is a sharded Hugging Face checkpoint (one shard per layer) with the masks in OUT/masks;
a killed run started again with the same arguments goes on at the last finished layer.
Errors are one line on stderr, exit status 1 (the full traceback with --verbose).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from bird_bone.cli.errors import USER_ERRORS, report_error
from bird_bone.errors import BirdBoneError

ORDERS = {"auto": "auto", "true": True, "false": False}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--source", required=True, type=Path, help="model directory (config.json, safetensors, tokenizer)")
    p.add_argument("--out", required=True, type=Path, help="output checkpoint directory")
    p.add_argument("--method", default="wanda", choices=["wanda", "sparsegpt", "magnitude"])
    p.add_argument("--sparsity", type=float, default=0.5, help="fraction of each layer's weights pruned")
    p.add_argument("--pattern", default="", help="N:M semi-structured pattern, e.g. 2:4 (overrides --sparsity)")
    p.add_argument("--calibration", type=Path, help="calibration text file (tokenized with the source's tokenizer)")
    p.add_argument("--windows", type=int, default=128, help="calibration windows")
    p.add_argument("--window-length", type=int, default=2048, help="tokens per calibration window")
    p.add_argument("--seed", type=int, default=0, help="seed of the calibration windows' positions")
    p.add_argument("--true-sequential", default="auto", choices=list(ORDERS), help="calibration order")
    p.add_argument("--batch-size", type=int, default=4, help="calibration windows per forward chunk")
    p.add_argument("--verbose", action="store_true", help="print the full traceback of an error")
    return p.parse_args(argv)


def calibration(args: argparse.Namespace):
    """The calibration windows drawn from ``--calibration`` (None for magnitude pruning)."""
    if args.calibration is None:
        if args.method != "magnitude":
            raise ValueError(f"--calibration: method {args.method} needs a calibration text file")
        return None
    from transformers import AutoTokenizer

    from bird_bone.data.windows import bos_token, calibration_windows, tokenize_text

    if not args.calibration.is_file():
        raise ValueError(f"--calibration: {args.calibration} is not a file")
    tokenizer = AutoTokenizer.from_pretrained(args.source)
    tokens = tokenize_text(tokenizer, args.calibration.read_text(encoding="utf-8"))
    return calibration_windows(
        tokens, args.window_length, args.windows, args.seed, str(args.calibration), bos_token(tokenizer)
    )


def pattern(text: str) -> tuple[int, int]:
    if not text:
        return 0, 0
    try:
        n, m = (int(part) for part in text.split(":"))
    except ValueError as exc:
        raise ValueError(f"--pattern: expected N:M such as 2:4, got {text!r}") from exc
    return n, m


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args = parse_args(argv)
    try:
        from bird_bone.prune.streamed import stream_prune

        n, m = pattern(args.pattern)
        summary = stream_prune(
            args.source, args.out, args.method, args.sparsity, calibration(args), n, m,
            batch_size=args.batch_size, true_sequential=ORDERS[args.true_sequential],
        )  # fmt: skip
    except (BirdBoneError, *USER_ERRORS) as exc:
        return report_error("stream_prune", exc, args.verbose)
    print(json.dumps({"out": str(args.out), "sparsity": summary["sparsity"]}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
