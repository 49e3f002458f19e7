"""Export a bird-bone checkpoint to a compressed-tensors checkpoint (vLLM, llm-compressor, transformers).

    python scripts/export_compressed.py --ckpt models/pruned --out models/pruned-w4a16 --scheme W4A16
    python scripts/export_compressed.py --ckpt models/pruned --out models/pruned-2of4 --scheme dense

2:4 sparsity (e.g. `prune.pattern=2:4`) is detected from the weights and recorded in the config.
Errors are one line on stderr, exit status 1.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from bird_bone.errors import BirdBoneError
from bird_bone.export.compressed import EXPORT_SCHEMES

DTYPES = ("bfloat16", "float16", "float32")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--ckpt", required=True, type=Path, help="bird-bone checkpoint directory")
    p.add_argument("--out", required=True, type=Path, help="directory to write")
    p.add_argument("--scheme", default="W4A16", choices=EXPORT_SCHEMES, help="weight format (default W4A16)")
    p.add_argument("--group-size", type=int, help="W4A16 input columns per scale (default: 128, or what divides)")
    p.add_argument("--dtype", default="bfloat16", choices=DTYPES, help="dtype of what stays unquantized")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args = parse_args(argv)
    try:
        import torch

        from bird_bone.export.compressed import export_compressed
        from bird_bone.io.checkpoint import load_checkpoint

        checkpoint = load_checkpoint(args.ckpt)
        result = export_compressed(
            checkpoint.model, checkpoint.tokenizer, args.out, args.scheme, args.group_size, getattr(torch, args.dtype)
        )
    except BirdBoneError as exc:
        print(f"export_compressed: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(result.to_dict(), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
