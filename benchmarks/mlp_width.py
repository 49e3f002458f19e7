"""Benchmark: llama.cpp tokens/s of the embedded model with its MLPs cut to a given width, to choose
``prune.structured.width_multiple`` (and to show what structured pruning buys in a GGUF).

    .venv/bin/python benchmarks/mlp_width.py [--widths 1536,1382,1376,1344,1280,1229,1216] [--types Q8_0,Q4_0]
    .venv/bin/python benchmarks/mlp_width.py --widths "" --gguf SOURCE.gguf models/export.gguf   # input vs output

Every decoder layer keeps its first W MLP neurons (the timing does not depend on which ones: the
quality of such a model is not measured here), the model is written as GGUF (``deci`` when the width
differs from the config's), and :func:`bird_bone.eval.llamacpp.throughput` times prompt processing of
256 random tokens in one batch and 32 generated one by one, on 2 threads, best of ``--repeats``. The
embedded model is SmolLM2-135M-Instruct (Q4_1 weights dequantized to float32).
"""

from __future__ import annotations

import argparse
import copy
import tempfile
from pathlib import Path

import torch

from bird_bone.eval.llamacpp import throughput
from bird_bone.export.llamacpp_quantize import export_gguf
from bird_bone.models.adapters import decoder_layers, keep_neurons
from bird_bone.models.loading import load_model


def cut(model, width: int):
    """A copy of ``model`` whose every MLP keeps its first ``width`` neurons."""
    model = copy.deepcopy(model)
    for layer in decoder_layers(model):
        keep_neurons(layer, torch.arange(width))
    return model


def best(path: Path, repeats: int, threads: int) -> dict:
    runs = [throughput(path, 256, 32, threads) for _ in range(repeats)]
    return {
        "prompt": max(r["prompt_tokens_per_s"] for r in runs),
        "decode": max(r["decode_tokens_per_s"] for r in runs),
        "bytes": runs[0]["bytes"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--widths", default="1536,1382,1376,1344,1280,1229,1216")
    parser.add_argument("--types", default="Q8_0,Q4_0")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--gguf", nargs="*", default=[], type=Path, help="GGUF files timed the same way, first")
    args = parser.parse_args()
    print("| MLP width / file | type | file bytes | prompt tok/s | generation tok/s |")
    print("| --- | --- | --- | --- | --- |")
    for path in args.gguf:
        speed = best(path, args.repeats, args.threads)
        print(f"| {path} | - | {speed['bytes']:,} | {speed['prompt']:.0f} | {speed['decode']:.1f} |")
    widths = [int(w) for w in args.widths.split(",") if w]
    loaded = load_model(args.model) if widths else None
    with tempfile.TemporaryDirectory() as tmp:
        for width in widths:
            model = cut(loaded.model, width)
            for type in args.types.split(","):
                path = export_gguf(model, loaded.tokenizer, Path(tmp) / f"w{width}-{type}.gguf", type).path
                speed = best(Path(path), args.repeats, args.threads)
                print(f"| {width} | {type} | {speed['bytes']:,} | {speed['prompt']:.0f} | {speed['decode']:.1f} |")
                Path(path).unlink()


if __name__ == "__main__":
    main()
