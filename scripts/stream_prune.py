"""Prune, log activations of or NOVAQ-quantize a Hugging Face safetensors model larger than memory,
one decoder layer at a time, resumably.

    python scripts/stream_prune.py --source DIR --out models/pruned --method wanda --sparsity 0.5 \\
        --calibration ../shared/data/wikitext2-raw-test.txt --windows 128 --window-length 2048
    python scripts/stream_prune.py --source DIR --out models/pruned-2of4 --method sparsegpt --pattern 2:4 ...
    python scripts/stream_prune.py --source DIR --out models/narrow --method structured --sparsity 0.2 ...
    python scripts/stream_prune.py --stage activations --source DIR --out data/stats --gram ...
    python scripts/stream_prune.py --stage novaq --source DIR --out models/novaq --novaq codebook_size=256 ...

Pruning writes a sharded Hugging Face checkpoint (one shard per layer) with the masks in OUT/masks
(structured: narrower MLPs, their widths in OUT/bird_bone.json, the kept neurons in OUT/kept);
activations writes one statistics file per layer; novaq the decoded checkpoint and the NOVAQ codes
in OUT/novaq (stages 1-2; --novaq KEY=VALUE sets a field of the novaq parameters).
A killed run started again with the same arguments goes on at the last finished layer.
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
    p.add_argument("--stage", default="prune", choices=["prune", "activations", "novaq"], help="what to stream")
    p.add_argument("--method", default="wanda", choices=["wanda", "sparsegpt", "magnitude", "structured"])
    p.add_argument(
        "--sparsity", type=float, default=0.5, help="fraction of each layer's weights pruned (structured: MLP neurons)"
    )
    p.add_argument("--pattern", default="", help="N:M semi-structured pattern, e.g. 2:4 (overrides --sparsity)")
    p.add_argument("--calibration", type=Path, help="calibration text file (tokenized with the source's tokenizer)")
    p.add_argument("--windows", type=int, default=128, help="calibration windows")
    p.add_argument("--window-length", type=int, default=2048, help="tokens per calibration window")
    p.add_argument("--seed", type=int, default=0, help="seed of the calibration windows' positions")
    p.add_argument("--true-sequential", default="auto", choices=list(ORDERS), help="calibration order")
    p.add_argument("--batch-size", type=int, default=4, help="calibration windows per forward chunk")
    p.add_argument("--clusters", type=int, default=8, help="structured/activations: k-means clusters of neurons")
    p.add_argument("--pattern-tokens", type=int, default=256, help="structured/activations: tokens per pattern")
    p.add_argument("--max-fraction-per-cluster", type=float, default=0.1, help="structured: cap per cluster")
    p.add_argument("--width-multiple", type=int, default=1, help="structured: kept widths a multiple of this")
    p.add_argument("--gram", action="store_true", help="activations: also the Gram matrices X^T X")
    p.add_argument("--novaq", action="append", default=[], metavar="KEY=VALUE", help="novaq: a parameter")
    p.add_argument("--verbose", action="store_true", help="print the full traceback of an error")
    return p.parse_args(argv)


def calibration(args: argparse.Namespace):
    """The calibration windows drawn from ``--calibration`` (None for magnitude pruning)."""
    if args.calibration is None:
        if args.stage == "prune" and args.method != "magnitude":
            raise ValueError(f"--calibration: method {args.method} needs a calibration text file")
        if args.stage == "activations":
            raise ValueError("--calibration: activation logging needs a calibration text file")
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


def novaq_config(pairs: list[str]):
    """The novaq parameters (``NovaqConfig``'s defaults) with the ``--novaq`` fields set (values as YAML)."""
    import yaml

    from bird_bone.quant.config import NovaqConfig

    fields = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ValueError(f"--novaq: expected KEY=VALUE, got {pair!r}")
        fields[key.strip()] = yaml.safe_load(value)
    return NovaqConfig.model_validate(fields)


def run(args: argparse.Namespace) -> dict:
    """Stream the chosen stage; a JSON-ready summary."""
    windows = calibration(args)
    if args.stage == "activations":
        from bird_bone.calibration.activations_streamed import stream_activations

        done = stream_activations(args.source, args.out, windows, args.batch_size, args.gram, args.clusters,
                                  args.pattern_tokens, args.seed)  # fmt: skip
        return {"out": str(args.out), "layer_files": len(done["files"])}
    if args.stage == "novaq":
        from bird_bone.quant.streamed import stream_novaq

        config = novaq_config(args.novaq)
        accounting = stream_novaq(args.source, args.out, config, windows, args.batch_size)
        return {"out": str(args.out), "quantized_bits_per_weight": accounting["quantized_bits_per_weight"]}
    if args.method == "structured":
        if args.pattern:
            raise ValueError("--pattern: structured pruning removes neurons; N:M patterns are for mask methods")
        from bird_bone.prune.streamed_structured import stream_remove_neurons

        kept = stream_remove_neurons(
            args.source, args.out, windows, args.sparsity, args.max_fraction_per_cluster, args.clusters,
            args.pattern_tokens, args.seed, args.batch_size, width_multiple=args.width_multiple,
        )  # fmt: skip
        return {"out": str(args.out), "mlp_widths": [len(index) for index in kept.values()]}
    from bird_bone.prune.streamed import stream_prune

    n, m = pattern(args.pattern)
    summary = stream_prune(
        args.source, args.out, args.method, args.sparsity, windows, n, m,
        batch_size=args.batch_size, true_sequential=ORDERS[args.true_sequential],
    )  # fmt: skip
    return {"out": str(args.out), "sparsity": summary["sparsity"]}


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args = parse_args(argv)
    try:
        result = run(args)
    except (BirdBoneError, *USER_ERRORS) as exc:
        return report_error("stream_prune", exc, args.verbose)
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
