"""Benchmark: GGUF export of the embedded model in every export type, measured in llama.cpp.

    .venv/bin/python benchmarks/export.py [--windows 8] [--types F32,Q8_0,Q4_K_M,...] [--no-novaq]
    .venv/bin/python benchmarks/export.py --model gemma3-270m --text tinystories-valid.txt --windows 32

Protocol: WikiText-2 raw test (or ``--text``) tokenized once, BOS as the first token of every window
where the tokenizer adds one (Gemma; SmolLM2 adds none), first N non-overlapping windows of 512 tokens,
perplexity computed in llama.cpp (llama-cpp-python, F32 KV cache, no flash attention) on those token
windows, and in transformers on the same windows for reference. Importance matrix: per-column sums
of x^2 at every decoder linear's input (what the prune stage's activation logging stores) over 16
random 512-token windows of wikitext2-valid-tokenized (seed 0). tokens/s: prompt processing of a
480-token window in one batch, then 32 tokens decoded one by one (llama.cpp, CPU, all threads).
Bits per weight: tensor bytes x 8 / parameters, over every tensor of the file. NOVAQ rows: a NOVAQ
directory (--novaq, or a quick 1.5-bit one made here) read back dequantized and re-quantized to GGUF;
"vs transformers" is then against the dequantized model's own transformers perplexity. The embedded
model is SmolLM2-135M-Instruct stored as a 4-bit Q4_1 GGUF and dequantized to float32: every figure
is relative to those weights.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import torch

from bird_bone.calibration.statistics import collect_input_statistics
from bird_bone.data.windows import bos_token, calibration_windows, evaluation_windows, tokenize_text, window_convention
from bird_bone.errors import ArtifactError
from bird_bone.eval.llamacpp import llama_perplexity, llama_throughput
from bird_bone.eval.perplexity import perplexity
from bird_bone.export.gguf import EXPORT_TYPES
from bird_bone.export.imatrix import importance_matrix
from bird_bone.export.llamacpp_quantize import export_gguf
from bird_bone.models.adapters import prunable_linears
from bird_bone.models.loading import load_model

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
HEADER = [
    "| model | type | imatrix | file MiB | bits/weight | perplexity (llama.cpp) | vs transformers | "
    "prompt tok/s | decode tok/s |",
    "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
]


@torch.inference_mode()
def activation_statistics(model, windows: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per decoder-layer linear, sum over tokens of x_j^2 (what the prune stage's activation logging
    stores as ``<module>.input_sq_norms``), from plain forward passes: the model is not changed."""
    with collect_input_statistics(prunable_linears(model)) as stats:
        for batch in windows.split(4):
            model(input_ids=batch, use_cache=False)
    return {f"{name}.input_sq_norms": s.sq_norms.clone() for name, s in stats.items()}


def measure(label, model, tok, type, imatrix, windows, reference, out: Path) -> str:
    result = export_gguf(model, tok, out / f"{label}-{type}.gguf", type, imatrix)
    ppl = llama_perplexity(result.path, windows).perplexity
    speed = llama_throughput(result.path, windows[0, :512].reshape(-1))
    mark = "yes" if imatrix and type not in ("F32", "F16", "BF16", "Q8_0", "Q4_0") else "-"
    Path(result.path).unlink()
    return (
        f"| {label} | {type} | {mark} | {result.size_bytes / 2**20:.1f} | {result.bits_per_weight:.2f} | {ppl:.3f} "
        f"| {100 * (ppl / reference - 1):+.2f} % | {speed['prompt_tokens_per_s']:.0f} | "
        f"{speed['decode_tokens_per_s']:.1f} |"
    )


def novaq_model(model, tok, out: Path, existing: Path | None):
    """A NOVAQ directory read back dequantized: ``existing``, or one written here from ``model``
    (1.5 index bits, 5 k-means iterations on 16 k vectors, no refinement: quick, not good)."""
    from bird_bone.export.novaq_format import write_novaq
    from bird_bone.export.novaq_read import read_novaq
    from bird_bone.quant.novaq import NovaqConfig, default_filter, quantize_model

    if existing is None:
        config = NovaqConfig(kmeans_iterations=5, kmeans_samples=16384)
        quantized = quantize_model(model, config, default_filter, progress=False)
        existing = out / "novaq"
        write_novaq(existing, model, tok, quantized, config.to_dict())
    return read_novaq(existing)[0]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--windows", type=int, default=8)
    parser.add_argument("--types", default=",".join(EXPORT_TYPES))
    parser.add_argument("--no-imatrix-rows", default="Q4_K_M,Q2_K", help="types also exported without imatrix")
    parser.add_argument("--novaq-types", default="Q8_0,Q4_K_M")
    parser.add_argument("--novaq", type=Path, help="a NOVAQ directory to export (default: a quick one made here)")
    parser.add_argument("--no-novaq", action="store_true")
    parser.add_argument("--model", default="smollm2-135m", help="embedded name or model source")
    parser.add_argument("--text", default="wikitext2-raw-test.txt", help="evaluation text in ../shared/data")
    args = parser.parse_args(argv)
    model, tok, _ = load_model(args.model)
    bos, label = bos_token(tok), args.model.split("-")[0]
    text = tokenize_text(tok, (DATA / args.text).read_text())
    test = evaluation_windows(text, 512, args.windows, bos=bos)
    calib_text = tokenize_text(tok, (DATA / "wikitext2-valid-tokenized.txt").read_text())
    calib = calibration_windows(calib_text, 512, 16, 0, bos=bos)
    imatrix = importance_matrix(activation_statistics(model, calib), model, tokens=calib.numel())
    reference = perplexity(model, test, batch_size=2, progress=False).perplexity
    lines = [f"{args.model}: {args.windows} x 512 of {args.text}, {window_convention(tok)}; transformers float32 "
             f"perplexity {reference:.3f}", ""]  # fmt: skip
    lines += HEADER
    with tempfile.TemporaryDirectory(prefix="bird_bone_export_bench_") as tmp:
        out = Path(tmp)
        for type in args.types.split(","):
            lines.append(measure(label, model, tok, type, imatrix, test, reference, out))
            print(lines[-1], file=sys.stderr, flush=True)
        for type in filter(None, args.no_imatrix_rows.split(",")):
            try:
                lines.append(measure(label, model, tok, type, None, test, reference, out))
            except ArtifactError as exc:  # IQ2_XXS: llama.cpp refuses without an importance matrix
                lines.append(f"| {label} | {type} | no | refused: {exc} | | | | | |")
            print(lines[-1], file=sys.stderr, flush=True)
        if not args.no_novaq:
            dequantized = novaq_model(model, tok, out, args.novaq)
            before = perplexity(dequantized, test, batch_size=2, progress=False).perplexity
            lines.append(f"| novaq (transformers, before export) | - | - | - | - | {before:.3f} | - | - | - |")
            for type in args.novaq_types.split(","):
                lines.append(measure("novaq", dequantized, tok, type, imatrix, test, before, out))
                print(lines[-1], file=sys.stderr, flush=True)
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    torch.set_num_threads(2)
    sys.exit(main())
