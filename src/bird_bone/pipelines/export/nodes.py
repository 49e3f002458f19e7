"""GGUF export nodes: each calls the library (bird_bone.export, bird_bone.eval.llamacpp)."""

from __future__ import annotations

import tempfile
from pathlib import Path

import torch

from bird_bone.config import BudgetParams, DataParams, ExportParams
from bird_bone.eval.llamacpp import llama_perplexity, throughput
from bird_bone.export.gguf import LLAMA_CPP_TYPES, GGUFExport, describe_gguf
from bird_bone.export.gguf_mixed import export_mixed
from bird_bone.export.gguf_template import template_path
from bird_bone.export.imatrix import importance_matrix
from bird_bone.export.llamacpp_quantize import export_gguf
from bird_bone.io.checkpoint import Checkpoint
from bird_bone.pipelines.export.datasets import StagedGGUF
from bird_bone.prune.sparsity import gguf_sparsity_warning


def quantize_gguf(
    checkpoint: Checkpoint,
    statistics: dict[str, torch.Tensor],
    calibration: torch.Tensor,
    windows: torch.Tensor,
    baseline: dict,
    data: DataParams,
    export: ExportParams,
    budget: BudgetParams,
    second: torch.Tensor | None = None,
) -> tuple[StagedGGUF, dict]:
    """The checkpoint as a GGUF of ``export.type``, staged for the catalog to put in place, and for
    ``mixed`` the budget search's record (every candidate, the one chosen and why): the budget holds on
    the evaluation text and, when the seed was scored on it, on the second domain's windows ``second``."""
    provenance = checkpoint.metadata.get("provenance")
    metadata = {"stage": checkpoint.metadata.get("stage"), "provenance": provenance}
    staged = Path(tempfile.mkdtemp(prefix="bird-bone-gguf-")) / "model.gguf"
    source = template_path(provenance)
    found = {"sparsity_warning": gguf_sparsity_warning(checkpoint.model), "input_gguf": source and str(source)}
    if export.type == "mixed":
        texts, seeds = {"evaluation": windows}, {"evaluation": baseline["perplexity"]}
        if second is not None and second.shape[0] and baseline.get("second_perplexity") is not None:
            texts["second"], seeds["second"] = second, baseline["second_perplexity"]
        gguf, record = _mixed(checkpoint, calibration, texts, seeds, export, budget, metadata, staged)
        return gguf, {**record, **found}
    tokens = data.calibration.windows * data.calibration.window_length  # what the statistics ran over
    imatrix = importance_matrix(statistics, checkpoint.model, tokens) if export.imatrix else None
    summary = export_gguf(checkpoint.model, checkpoint.tokenizer, staged, export.type, imatrix, metadata,
                          export.pre_tokenizer, export.threads, export.name)  # fmt: skip
    return StagedGGUF(staged, summary), found


def _mixed(checkpoint, calibration, texts: dict, seeds: dict, export, budget, metadata, staged):
    scored = {name: windows[: export.search_windows] for name, windows in texts.items()}
    threads = export.threads or None

    def score(path: Path) -> dict[str, float]:
        return {name: llama_perplexity(path, windows, threads).perplexity for name, windows in scored.items()}

    result = export_mixed(checkpoint.model, checkpoint.tokenizer, staged, calibration[: export.sensitivity_windows],
                          score, seeds, budget.max_ppl_increase, budget.target_bytes, budget.target_bpw, metadata,
                          export.search_steps, export.threads, pre_tokenizer=export.pre_tokenizer,
                          name=export.name, rounding=export.rounding)  # fmt: skip
    record = {"budget": budget.model_dump(), "seed_perplexity": seeds["evaluation"], "seed_perplexities": seeds,
              "scored_windows": {name: int(w.shape[0]) for name, w in scored.items()}, **result.to_dict()}  # fmt: skip
    return StagedGGUF(staged, describe_gguf(staged, "mixed")), record


def report_gguf(gguf_model: GGUFExport, mixed: dict, windows: torch.Tensor, export: ExportParams) -> dict:
    imatrix = "the exported model's sensitivity" if export.type == "mixed" else export.imatrix
    report = {**gguf_model.to_dict(), "imatrix": imatrix if export.type in (*LLAMA_CPP_TYPES, "mixed") else False}
    found = {key: mixed.get(key) for key in ("sparsity_warning", "input_gguf")}
    report["sparsity_warning"] = found["sparsity_warning"]
    if export.type == "mixed":
        report["mixed"] = {key: value for key, value in mixed.items() if key not in ("path", *found)}
    if export.eval_windows:
        scored = windows[: export.eval_windows]
        report["llama_cpp_perplexity"] = llama_perplexity(gguf_model.path, scored, export.threads or None).to_dict()
    if export.throughput:  # llama.cpp tokens/s of the output and of the file the run was given, same run
        files = {"output": gguf_model.path, "input": found["input_gguf"]}
        report["throughput"] = {k: throughput(p, threads=export.threads or None) for k, p in files.items() if p}
    return report
