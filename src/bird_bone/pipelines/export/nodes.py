"""GGUF export nodes: each calls the library (bird_bone.export, bird_bone.eval.llamacpp)."""

from __future__ import annotations

import tempfile
from pathlib import Path

import torch

from bird_bone.config import DataParams, ExportParams
from bird_bone.eval.llamacpp import llama_perplexity
from bird_bone.export.gguf import LLAMA_CPP_TYPES, GGUFExport
from bird_bone.export.imatrix import importance_matrix
from bird_bone.export.llamacpp_quantize import export_gguf
from bird_bone.io.checkpoint import Checkpoint
from bird_bone.pipelines.export.datasets import StagedGGUF


def quantize_gguf(
    checkpoint: Checkpoint, statistics: dict[str, torch.Tensor], data: DataParams, export: ExportParams
) -> StagedGGUF:
    """The checkpoint as a GGUF of ``export.type``, staged for the catalog to put in place."""
    tokens = data.calibration.windows * data.calibration.window_length  # what the statistics ran over
    imatrix = importance_matrix(statistics, checkpoint.model, tokens) if export.imatrix else None
    metadata = {"stage": checkpoint.metadata.get("stage"), "provenance": checkpoint.metadata.get("provenance")}
    staged = Path(tempfile.mkdtemp(prefix="bird-bone-gguf-")) / "model.gguf"
    summary = export_gguf(checkpoint.model, checkpoint.tokenizer, staged, export.type, imatrix, metadata,
                          export.pre_tokenizer, export.threads, export.name)  # fmt: skip
    return StagedGGUF(staged, summary)


def report_gguf(gguf_model: GGUFExport, windows: torch.Tensor, export: ExportParams) -> dict:
    report = {**gguf_model.to_dict(), "imatrix": export.imatrix and export.type in LLAMA_CPP_TYPES}
    if export.eval_windows:
        scored = windows[: export.eval_windows]
        report["llama_cpp_perplexity"] = llama_perplexity(gguf_model.path, scored, export.threads or None).to_dict()
    return report
