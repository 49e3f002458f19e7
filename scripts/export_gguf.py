"""Export a bird-bone checkpoint (or a NOVAQ directory, dequantized) to a GGUF file llama.cpp runs.

    python scripts/export_gguf.py --ckpt models/pruned --out models/pruned-q4_k_m.gguf
    python scripts/export_gguf.py --ckpt models/pruned --out models/pruned.gguf --type IQ2_XXS \\
        --imatrix-stats data/03_primary/activation_statistics.safetensors --calibration-tokens 16384
    python scripts/export_gguf.py --ckpt models/novaq --out models/novaq-q8_0.gguf --type Q8_0

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
from bird_bone.export.gguf import EXPORT_TYPES


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--ckpt", required=True, type=Path, help="checkpoint directory (config.json) or NOVAQ directory")
    p.add_argument("--out", required=True, type=Path, help="GGUF file to write, e.g. models/NAME.gguf")
    p.add_argument("--type", default="Q4_K_M", choices=EXPORT_TYPES, help="GGUF type (default Q4_K_M)")
    p.add_argument("--imatrix-stats", type=Path, help="activation statistics (safetensors) as importance matrix")
    p.add_argument("--calibration-tokens", type=int, help="tokens the statistics ran over (recorded in the imatrix)")
    p.add_argument("--imatrix-out", type=Path, help="also write the importance matrix as a GGUF imatrix file")
    p.add_argument("--pre-tokenizer", help="llama.cpp pre-tokenizer name (default: from the tokenizer)")
    p.add_argument("--name", help="general.name written in the file")
    p.add_argument("--threads", type=int, default=0, help="llama.cpp threads (0: all cores)")
    p.add_argument("--verbose", action="store_true", help="print the full traceback of an error")
    return p.parse_args(argv)


def load_source(path: Path):
    """(model, tokenizer, metadata) of a checkpoint directory or a NOVAQ directory (dequantized,
    after every check ``novaq validate`` makes, logits included)."""
    from bird_bone.export.novaq_schema import MANIFEST

    if (path / MANIFEST).is_file():
        from bird_bone.export.novaq_read import read_novaq, verify_logits

        model, tokenizer, manifest = read_novaq(path)
        verify_logits(model, manifest, path)
        return model, tokenizer, {"stage": "novaq", "novaq_parameters": manifest.get("novaq")}
    from bird_bone.io.checkpoint import load_checkpoint

    checkpoint = load_checkpoint(path)
    return checkpoint.model, checkpoint.tokenizer, checkpoint.metadata


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args = parse_args(argv)
    try:
        from bird_bone.export.imatrix import importance_matrix, write_imatrix
        from bird_bone.export.llamacpp_quantize import export_gguf
        from bird_bone.io.tensors import load_tensors

        model, tokenizer, metadata = load_source(args.ckpt)
        imatrix = None
        if args.imatrix_stats:
            imatrix = importance_matrix(load_tensors(args.imatrix_stats), model, args.calibration_tokens)
            if args.imatrix_out:
                write_imatrix(args.imatrix_out, imatrix, chunk_size=512, datasets=[str(args.imatrix_stats)])
        result = export_gguf(model, tokenizer, args.out, args.type, imatrix, metadata, args.pre_tokenizer,
                             args.threads, args.name)  # fmt: skip
    except (BirdBoneError, *USER_ERRORS) as exc:
        return report_error("export_gguf", exc, args.verbose)
    print(json.dumps(result.to_dict(), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
