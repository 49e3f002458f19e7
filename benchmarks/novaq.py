"""Benchmark: NOVAQ bits per weight (all-inclusive) vs WikiText-2 perplexity on the embedded model.

    .venv/bin/python benchmarks/novaq.py [--windows 32] [--window-length 512] [--quick]
        [--refine-steps 50] [--calibration-windows 32] [--configs default,2bit,...]

Protocol: WikiText-2 raw test tokenized once (no BOS), first N non-overlapping windows of 512 tokens;
calibration (refinement only) = random windows of wikitext2-valid-tokenized, seed 0. Rows: dense,
round-to-nearest 4-bit group-128 (computed in the same run), then each NOVAQ configuration without
and with teacher-guided refinement. Bits per weight count indices, codebooks, means, scales and
outlier metadata; "whole model" adds every other parameter at float16 (embeddings tied, counted once).
The embedded model is SmolLM2-135M-Instruct stored as 4-bit Q4_1 GGUF, dequantized to float32.
llama.cpp rows (Q2_K, IQ2 ...) are out of scope here: llama-cpp-python is not installed (a later issue).
"""

from __future__ import annotations

import argparse
import copy
import sys
import time
from pathlib import Path

import torch

from bird_bone.data.windows import calibration_windows, evaluation_windows, tokenize_text
from bird_bone.eval.perplexity import perplexity
from bird_bone.models.loading import load_model
from bird_bone.quant.activations import input_second_moments
from bird_bone.quant.novaq import NovaqConfig, apply_quantized, bit_accounting, default_filter, quantize_model
from bird_bone.quant.novaq import with_embeddings as all_weights
from bird_bone.quant.refine import RefineConfig, refine
from bird_bone.quant.rtn import rtn_bits_per_weight, rtn_quantize_model

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
CONFIGS = {  # name -> (config, which weights): decoder-layer linears, or every 2-D weight
    "default-1.5": (NovaqConfig(), default_filter),
    "2bit": (NovaqConfig(codebook_size=64, residual_codebook_size=4), default_filter),
    "2bit-aw": (NovaqConfig(codebook_size=64, residual_codebook_size=4, activation_aware=True), default_filter),
    "4bit-all": (
        NovaqConfig(codebook_size=256, residual_codebook_size=128, outlier_threshold=1.0),
        all_weights,
    ),
}


def row(name, acc, ppl, seconds, refine_s=None) -> str:
    q = f"{acc['quantized_bits_per_weight']:.3f}" if acc else "-"
    tot = f"{acc['total_bits_per_weight']:.3f}" if acc else "16 (fp16)"
    ratio = f"{acc['compression_vs_fp16']:.2f}x" if acc else "1.00x"
    ref = f"{refine_s:.0f}" if refine_s is not None else "-"
    return f"| {name} | {q} | {tot} | {ratio} | {ppl:.2f} | {seconds:.0f} | {ref} |"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--windows", type=int, default=32)
    parser.add_argument("--window-length", type=int, default=512)
    parser.add_argument("--calibration-windows", type=int, default=32)
    parser.add_argument("--refine-steps", type=int, default=50)
    parser.add_argument("--refine-lr", type=float, default=1e-4)
    parser.add_argument("--refine-window-length", type=int, default=256)
    parser.add_argument("--configs", default="default-1.5,2bit,4bit-all", help=f"comma list of {', '.join(CONFIGS)}")
    parser.add_argument("--no-refine", action="store_true")
    parser.add_argument("--no-rtn", action="store_true")
    parser.add_argument("--quick", action="store_true", help="4 windows, 10 refinement steps")
    args = parser.parse_args(argv)
    if args.quick:
        args.windows, args.refine_steps, args.calibration_windows = 4, 10, 8
    torch.set_num_threads(int(__import__("os").environ.get("NOVAQ_NUM_THREADS", "2")))
    model, tok, _ = load_model(args.model)
    test = evaluation_windows(
        tokenize_text(tok, (DATA / "wikitext2-raw-test.txt").read_text()), args.window_length, args.windows
    )
    calib_tokens = tokenize_text(tok, (DATA / "wikitext2-valid-tokenized.txt").read_text())
    calib = calibration_windows(calib_tokens, args.refine_window_length, args.calibration_windows, seed=0)
    lines = [
        f"windows: {args.windows} x {args.window_length} WikiText-2 raw test; model {args.model} "
        "(SmolLM2-135M-Instruct, Q4_1 GGUF dequantized to float32)",
        "",
        "| method | bits/weight (quantized layers) | bits/weight (whole model) | vs fp16 | perplexity "
        "| quantize s | refine s |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    lines.append(row("dense (float32 in memory)", None, perplexity(model, test, progress=False).perplexity, 0))
    print(lines[-1], file=sys.stderr, flush=True)
    if not args.no_rtn:
        rtn = copy.deepcopy(model)
        start = time.perf_counter()
        n = rtn_quantize_model(rtn, 4, 128)
        total = sum(p.numel() for p in rtn.parameters())
        bpw = rtn_bits_per_weight(4, 128)
        acc = {
            "quantized_bits_per_weight": bpw,
            "total_bits_per_weight": (n * bpw + (total - n) * 16) / total,
            "compression_vs_fp16": total * 16 / (n * bpw + (total - n) * 16),
        }
        lines.append(
            row("RTN 4-bit g128", acc, perplexity(rtn, test, progress=False).perplexity, time.perf_counter() - start)
        )
        print(lines[-1], file=sys.stderr, flush=True)
        del rtn
    for name in args.configs.split(","):
        config, filter_fn = CONFIGS[name]
        start = time.perf_counter()
        energies = None
        if config.activation_aware:
            names = [n for n, p in model.named_parameters() if filter_fn(n, p)]
            energies = input_second_moments(model, calib, names, progress=False)
        quantized = quantize_model(model, config, filter_fn, progress=False, energies=energies)
        seconds = time.perf_counter() - start
        acc = bit_accounting(model, quantized)
        student = apply_quantized(copy.deepcopy(model), quantized)
        lines.append(
            row(
                f"NOVAQ {name} {config.index_bits_per_weight:g}-bit idx",
                acc,
                perplexity(student, test, progress=False).perplexity,
                seconds,
            )
        )
        print(lines[-1], file=sys.stderr, flush=True)
        if not args.no_refine:
            rc = RefineConfig(max_iterations=args.refine_steps, learning_rate=args.refine_lr)
            result = refine(model, quantized, calib, rc, progress=False)
            apply_quantized(student, quantized)
            lines.append(
                row(
                    f"NOVAQ {name} + refine ({rc.max_iterations} steps)",
                    bit_accounting(model, quantized),
                    perplexity(student, test, progress=False).perplexity,
                    seconds,
                    result.seconds,
                )
            )
            lines.append(f"<!-- loss {name}: {result.losses[0]:.4f} -> {result.losses[-1]:.4f} -->")
            print(lines[-2], lines[-1], file=sys.stderr, flush=True)
        del student, quantized
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
