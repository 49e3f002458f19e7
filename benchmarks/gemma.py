"""Gemma 3 270M (the embedded ``gemma3-270m``, a mixed Q5_0/Q4_K/Q6_K/Q8_0 GGUF dequantized to float32,
a base model): dense perplexity in bird-bone and in llama.cpp on the same windows, GGUF exports,
pruning, NOVAQ and the canary, every figure on every text (``--texts``).

Windows: WikiText-2 raw test, the first N x 512 (default 32), and the TinyStories slice, tokenized once
with Gemma's own tokenizer, BOS as the first token of every window (the tokenizer adds one). llama.cpp
scores the F32 export (metadata carried over from the source GGUF) and the source GGUF itself.
Calibration (``--prune``, ``--novaq``): 32 x 512 random windows of WikiText-2 validation, seed 0, BOS-led.

    PYTHONPATH=src ../shared/cpu .venv/bin/python benchmarks/gemma.py --windows 32 --types F32 Q8_0
    PYTHONPATH=src ../shared/cpu .venv/bin/python benchmarks/gemma.py --types --skip-dense --prune wanda-2:4
    PYTHONPATH=src ../shared/cpu .venv/bin/python benchmarks/gemma.py --types --skip-dense --prune structured \
        --heal-steps 20
    PYTHONPATH=src ../shared/cpu .venv/bin/python benchmarks/gemma.py --types --skip-dense --novaq 2bit
    PYTHONPATH=src ../shared/cpu .venv/bin/python benchmarks/gemma.py --types --skip-dense --prune wanda --export Q8_0
    PYTHONPATH=src ../shared/cpu .venv/bin/python benchmarks/gemma.py --types --skip-dense --texts \
        --canary gemma3-270m smollm2-135m

``--prune``: one wave of a ``PRUNE_SPECS`` entry through ``prune_step`` (the loop's entry point), scored
before and, with ``--heal-steps``, after healing. ``--novaq``: NOVAQ stages 1-2
(Hessian-aware) of the decoder linears, decoded and scored in transformers, with the bits per weight
counting codebooks, means and scales. ``--export T ...``: each ``--prune`` model (healed, with
``--heal-steps``) and each ``--novaq`` model (its NOVAQ file written and read back decoded) exported as GGUF
type T (the source GGUF's metadata carried over) and scored in llama.cpp on every text.
``--canary``: ``bird_bone_canary`` in each form a model can run.

``--layer-errors N``: per method at 50 % (magnitude, Wanda, SparseGPT), the relative output error
sqrt(tr(E H E^T) / tr(W H W^T)) of every decoder linear (E = W - W_pruned, H = X^T X of its input on
N calibration windows of 512 from WikiText-2 validation, seed 0, BOS-led), on the dense model's inputs.
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
from functools import partial
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
    from bird_bone.prune.magnitude import magnitude_scores
    from bird_bone.prune.masks import select_mask
    from bird_bone.prune.sparsegpt import sparsegpt_prune
    from bird_bone.prune.wanda import wanda_scores

    calib = calibration(tokenizer, windows)
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


PRUNE_SPECS = {  # name -> PruneParams fields: one wave, the pipeline's defaults otherwise
    "wanda": {"method": "wanda"},
    "sparsegpt": {"method": "sparsegpt"},
    "wanda-2:4": {"method": "wanda", "pattern": "2:4"},
    "sparsegpt-2:4": {"method": "sparsegpt", "pattern": "2:4"},
    # 20 % of every MLP's neurons in one wave; a cluster may give up to 25 % (the default cap, 10 %
    # per wave, is for waves of 10 %)
    "structured": {"method": "structured", "structured": {"fraction": 0.2, "max_fraction_per_cluster": 0.25}},
}
NOVAQ_TILE = {"group_cols": 128, "outlier_threshold": 1.0}  # 128 divides Gemma's 640, 1024 and 2048 columns
NOVAQ_CONFIGS = {  # index bits = (log2 K1 + log2 K2) / d; decoder linears only, embedding left dense
    "2bit": {"codebook_size": 64, "residual_codebook_size": 4, **NOVAQ_TILE},
    "3.5bit": {"codebook_size": 256, "residual_codebook_size": 64, **NOVAQ_TILE},
}


def calibration(tok, windows: int = 32):
    """``windows`` x 512 from WikiText-2 validation, seed 0, BOS-led (the issue's calibration: 32)."""
    from bird_bone.data.windows import calibration_windows

    calib_text = (SHARED / "wikitext2-valid-tokenized.txt").read_text()
    return calibration_windows(tokenize_text(tok, calib_text), 512, windows, 0, "calibration", bos_token(tok))


def scores(model, texts: dict[str, torch.Tensor]) -> dict[str, float]:
    """Perplexity in transformers on every text's windows."""
    return {name: perplexity(model, w, batch_size=1, progress=False).perplexity for name, w in texts.items()}


def gguf_scores(model, tok, types: list[str], texts: dict[str, torch.Tensor], metadata: dict) -> dict:
    """Each ``types`` GGUF export of ``model`` (``export_gguf``, the source GGUF's metadata carried
    over): bytes, bits per weight, the MLP width llama.cpp reads, and its llama.cpp perplexity on every text."""
    import gguf

    from bird_bone.export.llamacpp_quantize import export_gguf

    out = {}
    with tempfile.TemporaryDirectory(prefix="gemma-gguf-") as tmp:
        for t in types:
            export = export_gguf(model, tok, Path(tmp) / f"{t}.gguf", t, metadata=metadata, threads=2)
            width = gguf.GGUFReader(export.path).fields[f"{export.architecture}.feed_forward_length"].contents()
            out[t] = {"bytes": export.size_bytes, "bits_per_weight": export.bits_per_weight,
                      "feed_forward_length": width, "tensor_types": export.tensor_types,
                      "llama_cpp": {n: llama_perplexity(export.path, w, threads=2).perplexity
                                    for n, w in texts.items()}}  # fmt: skip
            Path(export.path).unlink()
    return out


def pruned_perplexity(spec: str, dense, calib, bos, texts: dict[str, torch.Tensor], heal_steps: int,
                      export=None) -> dict:  # fmt: skip
    """Every text's perplexity after one wave of ``spec`` (``PRUNE_SPECS``) on a copy of ``dense``,
    calibrated on ``calib``; with ``heal_steps``, also after that many QLoRA heal steps (the
    pipeline's heal defaults, on the same calibration windows); ``export`` (``gguf_scores`` bound to
    the types and texts), the final (healed) model's GGUF exports scored in llama.cpp."""
    import copy

    from bird_bone.heal.config import HealParams
    from bird_bone.loop.steps import heal_step
    from bird_bone.prune.config import PruneParams
    from bird_bone.prune.layerwise import mask_sparsity
    from bird_bone.prune.step import neurons_removed, prune_step

    params, model = PruneParams(waves=1, **PRUNE_SPECS[spec]), copy.deepcopy(dense)
    step = prune_step(model, params.method, params.amount(1), calib, batch_size=4, seed=0, **params.options())
    result = {"spec": spec, "prune_seconds": step.seconds}
    if params.removes_neurons:
        result.update(neurons_removed(model), parameters=sum(p.numel() for p in model.parameters()))
        result.pop("mlp_widths")
    else:
        result.update(pattern=params.pattern, sparsity=mask_sparsity(step.masks))
    result["perplexity"] = scores(model, texts)
    if heal_steps:
        healed = heal_step(model, calib, step.masks, heal_steps, bos=bos, progress=False,
                           **HealParams(data="calibration", lm_weight=1.0, kd_weight=0.0).options())  # fmt: skip
        result["healed"] = {"steps": heal_steps, "loss": [healed.loss[0], healed.loss[-1]],
                            "seconds": healed.seconds, "perplexity": scores(model, texts)}  # fmt: skip
    if export:
        result["gguf"] = export(model)
    return result


def novaq_perplexity(name: str, dense, calib, texts: dict[str, torch.Tensor], export=None, tok=None) -> dict:
    """Every text's perplexity after NOVAQ stages 1-2 (Hessian-aware, ``NOVAQ_CONFIGS[name]``) of the
    decoder linears, decoded into a copy of ``dense`` and scored in transformers, with the bits. With
    ``export`` (``gguf_scores`` bound), the NOVAQ file is written, read back decoded (``read_novaq``,
    every check) and that model's GGUF exports scored in llama.cpp."""
    import copy
    import time

    from bird_bone.quant.config import NovaqConfig
    from bird_bone.quant.novaq import apply_quantized, bit_accounting, quantize_model_hessian

    config, start = NovaqConfig(**NOVAQ_CONFIGS[name]), time.perf_counter()
    quantized = quantize_model_hessian(dense, config, calib, progress=False)
    seconds = time.perf_counter() - start
    bits = bit_accounting(dense, quantized)
    model = apply_quantized(copy.deepcopy(dense), quantized)
    index_bits = config.codebook_size.bit_length() - 1 + config.residual_codebook_size.bit_length() - 1
    result = {
        "novaq": name, "config": NOVAQ_CONFIGS[name], "index_bits": index_bits / config.subspaces,
        "quantize_seconds": seconds, "perplexity": scores(model, texts),
        **{k: bits[k] for k in ("quantized_bits_per_weight", "bits_by_kind", "total_bits_per_weight")},
    }  # fmt: skip
    if export:
        from bird_bone.export.novaq_format import write_novaq
        from bird_bone.export.novaq_read import read_novaq

        with tempfile.TemporaryDirectory(prefix="gemma-novaq-") as tmp:
            manifest = write_novaq(Path(tmp) / "novaq", dense, tok, quantized, config.to_dict())
            decoded = read_novaq(Path(tmp) / "novaq")[0]
        result["novaq_file"] = {k: manifest["statistics"][k] for k in ("shard_bytes", "shard_bits_per_weight")}
        scored = dict(model.named_parameters())  # the model scored above; dense tensors stored float16
        gaps = [float((p - scored[n]).abs().max()) for n, p in decoded.named_parameters()]
        result["decoded_max_abs_difference"] = max(gaps)
        result["gguf"] = export(decoded)
    return result


def canary(models: list[str]) -> dict:
    """The canary in every form each model can run (``bird_bone.eval.harness``): the form
    ``bird_bone_canary`` picks for it, and the base (plain continuation) and chat forms."""
    from bird_bone.eval import harness

    out = {}
    for spec in models:
        model, tok, _ = load_model(spec)
        forms = [harness.CANARY_TASK, harness.CANARY_BASE_TASK] + [harness.CANARY_CHAT_TASK] * bool(tok.chat_template)
        out[spec] = harness.run_lm_eval(model, tok, forms, batch_size=8)
        print(json.dumps({"canary": {spec: out[spec]}}), flush=True)
    return out


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
    parser.add_argument("--gguf", nargs="*", default=[], type=Path, help="GGUF files scored in llama.cpp")
    parser.add_argument("--dequantized", nargs="*", default=[], help="exports scored in transformers, dequantized")
    parser.add_argument("--texts", nargs="*", default=["wikitext2-raw-test.txt", "tinystories-valid.txt"])
    parser.add_argument("--skip-dense", action="store_true", help="do not score the dense model again")
    parser.add_argument("--layer-errors", type=int, default=0, help="calibration windows for the layer errors")
    parser.add_argument("--prune", nargs="*", default=[], choices=PRUNE_SPECS, help="one wave each, every text")
    parser.add_argument("--calibration-windows", type=int, default=32, help="for --prune and --novaq")
    parser.add_argument("--heal-steps", type=int, default=0, help="also score each pruned model healed so")
    parser.add_argument("--novaq", nargs="*", default=[], choices=NOVAQ_CONFIGS, help="scored in transformers")
    parser.add_argument("--export", nargs="*", default=[], help="GGUF types of each --prune/--novaq model, llama.cpp")
    parser.add_argument("--canary", nargs="*", default=[], help="models run on the canary's forms (e.g. smollm2-135m)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO)
    torch.set_num_threads(2)
    canaries = canary(args.canary)
    loaded = load_model("gemma3-270m")
    model, tok = loaded.model, loaded.tokenizer
    report = {"model": loaded.provenance.description, "windows": window_convention(tok), "texts": {}}
    report.update({"canary": canaries} if canaries else {})
    if args.layer_errors:
        report["layer_errors_50"] = layer_errors(model, tok, args.layer_errors)
        print(json.dumps({"layer_errors_50": report["layer_errors_50"]}), flush=True)
    provenance = {"provenance": loaded.provenance.to_dict()}
    bos = bos_token(tok)
    texts = {  # each tokenized once, BOS-led windows
        name: evaluation_windows(tokenize_text(tok, (SHARED / name).read_text()), 512, args.windows, name, bos)
        for name in args.texts
    }
    with tempfile.TemporaryDirectory() as tmp:
        exports = {t: write_gguf(model, tok, Path(tmp) / f"{t}.gguf", t, metadata=provenance) for t in args.types}
        dequantized = {t: load_model("gemma3-270m").model for t in args.dequantized}
        for t, copy in dequantized.items():
            load_dequantized(copy, write_gguf(model, tok, Path(tmp) / f"dq-{t}.gguf", t, metadata=provenance).path)
        for name, windows in texts.items():
            row = {}
            if not args.skip_dense:
                row["bird_bone"] = perplexity(model, windows, batch_size=1, progress=False).perplexity
            for t, export in exports.items():
                row[f"llama_cpp_{t}"] = llama_perplexity(export.path, windows, threads=2).perplexity
                row[f"{t}_bits_per_weight"] = export.bits_per_weight
            for t, copy in dequantized.items():
                scored = perplexity(copy, windows, batch_size=1, progress=False)
                row[f"transformers_dequantized_{t}"] = scored.perplexity
            files = {"source_gguf": embedded_model_path("gemma3-270m")} if args.source else {}
            for label, path in {**files, **{str(p): p for p in args.gguf}}.items():
                row[f"llama_cpp_{label}"] = llama_perplexity(path, windows, 2).perplexity
            if row:
                report["texts"][name] = row
                print(json.dumps({name: row}), flush=True)
    calib = calibration(tok, args.calibration_windows) if args.prune or args.novaq else None
    export = partial(gguf_scores, tok=tok, types=args.export, texts=texts, metadata=provenance) if args.export else None
    for spec in args.prune:
        report[f"prune_{spec}"] = pruned_perplexity(spec, model, calib, bos, texts, args.heal_steps, export)
        print(json.dumps(report[f"prune_{spec}"]), flush=True)
    for name in args.novaq:
        report[f"novaq_{name}"] = novaq_perplexity(name, model, calib, texts, export, tok)
        print(json.dumps(report[f"novaq_{name}"]), flush=True)
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
