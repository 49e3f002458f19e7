"""Benchmark: NOVAQ bits per weight (all-inclusive) vs WikiText-2 perplexity on the embedded model.

    .venv/bin/python benchmarks/novaq.py [--windows 32] [--window-length 512] [--calibration-windows 32]
        [--refine-steps 20] [--configs default-1.5,2bit,...] [--rtn 4:128,3:128,2:64] [--no-refine]

Protocol: WikiText-2 raw test tokenized once (no BOS), first N non-overlapping windows of 512 tokens.
Calibration: random windows of wikitext2-valid-tokenized, seed 0: N x 512 for the layer Hessians of the
GPTVQ-style stage 2 (inputs of layer i+1 from the quantized layer i), N x ``--refine-window-length``
for refinement. Rows: dense, round-to-nearest (group-wise, same run), then each NOVAQ configuration
(codebook tiles of 192 columns, every row with its own float16 scale, GPTVQ codebook update) without
and with teacher-guided refinement (indices fixed; codebooks, row means and scales tuned, lr 1e-3).
Bits per weight count indices, codebooks, means, scales and outlier metadata; "whole model" adds every
other parameter at float16 (embeddings tied, counted once) or their own NOVAQ codes when a configuration
quantizes them.
The embedded model is SmolLM2-135M-Instruct stored as 4-bit Q4_1 GGUF, dequantized to float32.
llama.cpp rows (``--llamacpp``): Q2_K and IQ2_XXS through llama.cpp's quantizer with the importance matrix
of the calibration windows, perplexity computed in llama.cpp on the same evaluation windows.
"""

from __future__ import annotations

import argparse
import copy
import os
import sys
import time
from pathlib import Path

import torch

from bird_bone.data.windows import calibration_windows, evaluation_windows, tokenize_text
from bird_bone.eval.perplexity import perplexity
from bird_bone.models.loading import load_model
from bird_bone.quant.novaq import NovaqConfig, apply_quantized, bit_accounting, default_filter, quantize_model_hessian
from bird_bone.quant.novaq import with_embeddings as all_weights
from bird_bone.quant.refine import RefineConfig, refine
from bird_bone.quant.rtn import rtn_bits_per_weight, rtn_quantize_model

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
TILE = {"group_cols": 192, "outlier_threshold": 1.0}  # codebook per 192 columns x all rows; every row scaled
EMB_3BIT = NovaqConfig(codebook_size=256, residual_codebook_size=16, group_cols=192, hessian_aware=False)
EMB_4BIT = NovaqConfig(codebook_size=256, residual_codebook_size=256, group_cols=192, hessian_aware=False)
CONFIGS = {  # name -> (decoder-layer config, which weights, config of embeddings/head when quantized)
    "default-1.5": (NovaqConfig(**TILE), default_filter, None),
    "2bit": (NovaqConfig(codebook_size=64, residual_codebook_size=4, **TILE), default_filter, None),
    "3bit": (NovaqConfig(codebook_size=256, residual_codebook_size=16, **TILE), default_filter, None),
    "3bit-all": (NovaqConfig(codebook_size=256, residual_codebook_size=16, **TILE), all_weights, EMB_3BIT),
    "3.5bit-all": (NovaqConfig(codebook_size=256, residual_codebook_size=64, **TILE), all_weights, EMB_4BIT),
}


def llamacpp_rows(model, tokenizer, test, calibration, types=("Q2_K", "IQ2_XXS")) -> list[str]:
    """The llama.cpp peer rows: GGUF exports quantized by llama.cpp's own quantizer with the importance
    matrix of ``calibration``, perplexity computed in llama.cpp on the same ``test`` windows."""
    import tempfile

    from bird_bone.calibration.statistics import collect_input_statistics
    from bird_bone.eval.llamacpp import llama_perplexity
    from bird_bone.export.imatrix import importance_matrix
    from bird_bone.export.llamacpp_quantize import export_gguf
    from bird_bone.models.adapters import prunable_linears

    with torch.inference_mode(), collect_input_statistics(prunable_linears(model)) as stats:
        for batch in calibration.split(4):
            model(input_ids=batch, use_cache=False)
    sq = {f"{name}.input_sq_norms": s.sq_norms.clone() for name, s in stats.items()}
    imatrix = importance_matrix(sq, model, tokens=calibration.numel())
    rows = []
    with tempfile.TemporaryDirectory(prefix="novaq-llamacpp-") as tmp:
        for type in types:
            start = time.perf_counter()
            result = export_gguf(model, tokenizer, Path(tmp) / f"{type}.gguf", type, imatrix)
            seconds = time.perf_counter() - start
            ppl = llama_perplexity(result.path, test).perplexity
            rows.append(
                f"| llama.cpp {type} + imatrix (whole file; K/I-quants fall back on 576-wide rows) | - | "
                f"{result.bits_per_weight:.3f} | {16 / result.bits_per_weight:.2f}x | {ppl:.2f} | {seconds:.0f} | - |"
            )
    return rows


def row(name, acc, ppl, seconds, refine_s=None) -> str:
    q = f"{acc['quantized_bits_per_weight']:.3f}" if acc else "-"
    tot = f"{acc['total_bits_per_weight']:.3f}" if acc else "16 (fp16)"
    ratio = f"{acc['compression_vs_fp16']:.2f}x" if acc else "1.00x"
    ref = f"{refine_s:.0f}" if refine_s is not None else "-"
    return f"| {name} | {q} | {tot} | {ratio} | {ppl:.2f} | {seconds:.0f} | {ref} |"


def rtn_row(model, bits: int, group: int, test) -> str:
    rtn = copy.deepcopy(model)
    start = time.perf_counter()
    n = rtn_quantize_model(rtn, bits, group)
    total = sum(p.numel() for p in rtn.parameters())
    bpw = rtn_bits_per_weight(bits, group)
    acc = {
        "quantized_bits_per_weight": bpw,
        "total_bits_per_weight": (n * bpw + (total - n) * 16) / total,
        "compression_vs_fp16": total * 16 / (n * bpw + (total - n) * 16),
    }
    ppl = perplexity(rtn, test, progress=False).perplexity
    return row(f"RTN {bits}-bit g{group}", acc, ppl, time.perf_counter() - start)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--windows", type=int, default=32)
    parser.add_argument("--window-length", type=int, default=512)
    parser.add_argument("--calibration-windows", type=int, default=32)
    parser.add_argument("--refine-steps", type=int, default=20)
    parser.add_argument("--refine-lr", type=float, default=1e-3)
    parser.add_argument("--no-tune-scales", action="store_true", help="refine the codebooks only")
    parser.add_argument("--refine-window-length", type=int, default=256)
    parser.add_argument("--configs", default="default-1.5,2bit", help=f"comma list of {', '.join(CONFIGS)}")
    parser.add_argument("--rtn", default="4:128", help="comma list of bits:group RTN rows ('' for none)")
    parser.add_argument("--no-refine", action="store_true")
    parser.add_argument("--llamacpp", action="store_true", help="add llama.cpp rows (bird_bone.eval.llamacpp)")
    args = parser.parse_args(argv)
    torch.set_num_threads(int(os.environ.get("NOVAQ_NUM_THREADS", "2")))
    model, tok, _ = load_model(args.model)
    test = evaluation_windows(
        tokenize_text(tok, (DATA / "wikitext2-raw-test.txt").read_text()), args.window_length, args.windows
    )
    calib_tokens = tokenize_text(tok, (DATA / "wikitext2-valid-tokenized.txt").read_text())
    hessian_calib = calibration_windows(calib_tokens, args.window_length, args.calibration_windows, seed=0)
    refine_calib = calibration_windows(calib_tokens, args.refine_window_length, args.calibration_windows, seed=0)
    lines = [
        f"windows: {args.windows} x {args.window_length} WikiText-2 raw test; calibration {args.calibration_windows}"
        f" x {args.window_length}; model {args.model} (SmolLM2-135M-Instruct, Q4_1 GGUF dequantized to float32)",
        "",
        "| method | bits/weight (quantized layers) | bits/weight (whole model) | vs fp16 | perplexity "
        "| quantize s | refine s |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]

    def emit(line: str) -> None:
        lines.append(line)
        print(line, file=sys.stderr, flush=True)

    emit(row("dense (float32 in memory)", None, perplexity(model, test, progress=False).perplexity, 0))
    for spec in filter(None, args.rtn.split(",")):
        bits, group = (int(v) for v in spec.split(":"))
        emit(rtn_row(model, bits, group, test))
    if args.llamacpp:
        for line in llamacpp_rows(model, tok, test, hessian_calib):
            emit(line)
    for name in args.configs.split(","):
        config, filter_fn, emb_config = CONFIGS[name]
        start = time.perf_counter()
        quantized = quantize_model_hessian(
            model, config, hessian_calib, filter_fn, progress=False, embedding_config=emb_config
        )
        seconds = time.perf_counter() - start
        student = apply_quantized(copy.deepcopy(model), quantized)
        label = f"NOVAQ {name} (d={config.subspaces}, K1={config.codebook_size}, K2={config.residual_codebook_size})"
        ppl = perplexity(student, test, progress=False).perplexity
        emit(row(label, bit_accounting(model, quantized), ppl, seconds))
        if not args.no_refine and args.refine_steps:
            rc = RefineConfig(
                max_iterations=args.refine_steps, learning_rate=args.refine_lr, tune_scales=not args.no_tune_scales
            )
            result = refine(model, quantized, refine_calib, rc, progress=False)
            apply_quantized(student, quantized)
            ppl = perplexity(student, test, progress=False).perplexity
            emit(row(f"{label} + refine ({rc.max_iterations} steps)", bit_accounting(model, quantized), ppl,
                     seconds, result.seconds))  # fmt: skip
            emit(f"<!-- loss {name}: {result.losses[0]:.4f} -> {result.losses[-1]:.4f} -->")
        del student, quantized
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
