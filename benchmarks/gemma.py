"""Gemma 3 270M (the embedded ``gemma3-270m``, a mixed Q5_0/Q4_K/Q6_K/Q8_0 GGUF dequantized to float32,
a base model): dense perplexity in bird-bone and in llama.cpp on the same windows, and GGUF exports.

Windows: WikiText-2 raw test, the first N x 512 (default 32), and the TinyStories slice, tokenized once
with Gemma's own tokenizer, BOS as the first token of every window (the tokenizer adds one). llama.cpp
scores the F32 export (metadata carried over from the source GGUF) and the source GGUF itself.

    PYTHONPATH=src ../shared/cpu .venv/bin/python benchmarks/gemma.py --windows 32 --types F32 Q8_0
    PYTHONPATH=src ../shared/cpu .venv/bin/python benchmarks/gemma.py --texts --types --prune wanda sparsegpt

``--layer-errors N``: per method at 50 % (magnitude, Wanda, SparseGPT), the relative output error
sqrt(tr(E H E^T) / tr(W H W^T)) of every decoder linear (E = W - W_pruned, H = X^T X of its input on
N calibration windows of 512 from WikiText-2 validation, seed 0, BOS-led), on the dense model's inputs.
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
from pathlib import Path

import torch

from bird_bone.data.windows import bos_token, evaluation_windows, tokenize_text, window_convention
from bird_bone.eval.llamacpp import llama_perplexity
from bird_bone.eval.perplexity import perplexity
from bird_bone.export.gguf import write_gguf
from bird_bone.models.loading import embedded_model_path, load_model

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def layer_errors(model, tokenizer, windows: int) -> dict[str, float]:
    """Mean relative output error per method at 50 % over every decoder linear (see module doc)."""
    from bird_bone.calibration.sequential import run_sequential
    from bird_bone.data.windows import calibration_windows
    from bird_bone.prune.magnitude import magnitude_scores
    from bird_bone.prune.masks import select_mask
    from bird_bone.prune.sparsegpt import sparsegpt_prune
    from bird_bone.prune.wanda import wanda_scores

    text = (SHARED / "wikitext2-valid-tokenized.txt").read_text()
    calib = calibration_windows(tokenize_text(tokenizer, text), 512, windows, 0, "calibration", bos_token(tokenizer))
    errors: dict[str, list[float]] = {"magnitude": [], "wanda": [], "sparsegpt": []}

    def error(w, pruned, h) -> float:
        e = w - pruned
        return float(((e @ h * e).sum() / (w @ h * w).sum()).sqrt())

    def visit(index, layer, stats) -> bool:
        for name, module in layer.named_modules():
            if not isinstance(module, torch.nn.Linear):
                continue
            w, h = module.weight.detach().float(), stats[name].hessian.float()
            for method, scores, scope in (
                ("magnitude", magnitude_scores(w), "layer"),
                ("wanda", wanda_scores(w, stats[name].sq_norms), "row"),
            ):
                errors[method].append(error(w, w.masked_fill(select_mask(scores, 0.5, 0, 0, scope), 0.0), h))
            errors["sparsegpt"].append(error(w, sparsegpt_prune(w.clone(), h, 0.5)[0], h))
        return False

    run_sequential(model, calib, visit, batch_size=4, gram=True, progress=False, modifies=False)
    return {method: sum(v) / len(v) for method, v in errors.items()}


def pruned_perplexity(method: str, windows: int) -> dict:
    """WikiText-2 perplexity after one 50 % wave of ``method`` (calibration: 32 x 512 from WikiText-2
    validation, seed 0, BOS-led; the pipeline's default calibration order)."""
    from bird_bone.data.windows import calibration_windows
    from bird_bone.prune.layerwise import mask_sparsity, prune_layers

    model, tok, _ = load_model("gemma3-270m")
    calib_text = (SHARED / "wikitext2-valid-tokenized.txt").read_text()
    calib = calibration_windows(tokenize_text(tok, calib_text), 512, 32, 0, "calibration", bos_token(tok))
    test_text = (SHARED / "wikitext2-raw-test.txt").read_text()
    test = evaluation_windows(tokenize_text(tok, test_text), 512, windows, "test", bos_token(tok))
    masks = prune_layers(model, method, 0.5, calib, batch_size=4, true_sequential="auto")
    ppl = perplexity(model, test, batch_size=1, progress=False).perplexity
    return {"method": method, "sparsity": mask_sparsity(masks), "wikitext2_perplexity": ppl}


@torch.no_grad()
def load_dequantized(model, path) -> None:
    """Overwrite ``model``'s matrices with those of its GGUF export ``path``, dequantized (Gemma's are
    not permuted; its norms stay F32 in the file, so they are left as they are)."""
    import gguf

    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.GEMMA3, model.config.num_hidden_layers)
    tensors = {t.name: t for t in gguf.GGUFReader(path).tensors}
    copied = 0
    for name, param in model.named_parameters():
        t = tensors.get(names.get_name(name, try_suffixes=(".weight", ".bias")))
        if param.ndim == 2 and t is not None:
            values = gguf.quants.dequantize(t.data, t.tensor_type).reshape(param.shape)
            param.copy_(torch.from_numpy(values.astype("float32")))
            copied += 1
    if copied != 1 + 7 * model.config.num_hidden_layers:  # the tied embedding and every decoder linear
        raise RuntimeError(f"{path}: {copied} matrices dequantized")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--windows", type=int, default=32)
    parser.add_argument("--types", nargs="*", default=["F32"], help="GGUF exports scored in llama.cpp")
    parser.add_argument("--source", action="store_true", help="also score the source GGUF in llama.cpp")
    parser.add_argument("--dequantized", nargs="*", default=[], help="exports scored in transformers, dequantized")
    parser.add_argument("--texts", nargs="*", default=["wikitext2-raw-test.txt", "tinystories-valid.txt"])
    parser.add_argument("--skip-dense", action="store_true", help="do not score the dense model again")
    parser.add_argument("--layer-errors", type=int, default=0, help="calibration windows for the layer errors")
    parser.add_argument("--prune", nargs="*", default=[], help="methods pruned to 50 %% and scored on WikiText-2")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO)
    torch.set_num_threads(2)
    loaded = load_model("gemma3-270m")
    model, tok = loaded.model, loaded.tokenizer
    report = {"model": loaded.provenance.description, "windows": window_convention(tok), "texts": {}}
    if args.layer_errors:
        report["layer_errors_50"] = layer_errors(model, tok, args.layer_errors)
        print(json.dumps({"layer_errors_50": report["layer_errors_50"]}), flush=True)
    provenance = {"provenance": loaded.provenance.to_dict()}
    with tempfile.TemporaryDirectory() as tmp:
        exports = {t: write_gguf(model, tok, Path(tmp) / f"{t}.gguf", t, metadata=provenance) for t in args.types}
        dequantized = {t: load_model("gemma3-270m").model for t in args.dequantized}
        for t, copy in dequantized.items():
            load_dequantized(copy, write_gguf(model, tok, Path(tmp) / f"dq-{t}.gguf", t, metadata=provenance).path)
        for name in args.texts:
            windows = evaluation_windows(
                tokenize_text(tok, (SHARED / name).read_text()), 512, args.windows, name, bos_token(tok)
            )
            row = {}
            if not args.skip_dense:
                row["bird_bone"] = perplexity(model, windows, batch_size=1, progress=False).perplexity
            for t, export in exports.items():
                row[f"llama_cpp_{t}"] = llama_perplexity(export.path, windows, threads=2).perplexity
                row[f"{t}_bits_per_weight"] = export.bits_per_weight
            for t, copy in dequantized.items():
                scored = perplexity(copy, windows, batch_size=1, progress=False)
                row[f"transformers_dequantized_{t}"] = scored.perplexity
            if args.source:
                row["llama_cpp_source_gguf"] = llama_perplexity(
                    embedded_model_path("gemma3-270m"), windows, 2
                ).perplexity
            report["texts"][name] = row
            print(json.dumps({name: row}), flush=True)
    for method in args.prune:
        report[f"prune_{method}_50"] = pruned_perplexity(method, args.windows)
        print(json.dumps(report[f"prune_{method}_50"]), flush=True)
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
