"""NOVAQ nodes: each calls the library (bird_bone.quant, bird_bone.export)."""

from __future__ import annotations

import torch

from bird_bone.config import DataParams, EvalParams
from bird_bone.data.text import load_text
from bird_bone.data.windows import bos_token, calibration_windows, evaluation_windows, tokenize_text
from bird_bone.eval.perplexity import perplexity
from bird_bone.io.checkpoint import Checkpoint
from bird_bone.models.loading import load_model
from bird_bone.pipelines.novaq.datasets import NovaqArtifact
from bird_bone.quant.config import NovaqConfig
from bird_bone.quant.run import compress


def make_calibration_windows(checkpoint: Checkpoint, data: DataParams, novaq: NovaqConfig) -> torch.Tensor:
    spec, refine = data.calibration, novaq.refine
    text, source = load_text(spec.source, spec.split, spec.column, spec.config_name, spec.fallback)
    tokens = tokenize_text(checkpoint.tokenizer, text)
    bos = bos_token(checkpoint.tokenizer)
    return calibration_windows(tokens, refine.window_length, refine.calibration_windows, refine.seed, source.spec, bos)


def quantize_model(checkpoint: Checkpoint, calibration: torch.Tensor, novaq: NovaqConfig) -> tuple[NovaqArtifact, dict]:
    teacher = load_model(novaq.teacher_model).model if novaq.teacher_model else None
    run = compress(checkpoint.model, novaq, calibration, teacher)
    extra = {"source": checkpoint.metadata.get("provenance"), "refinement": run.report.get("refinement")}
    artifact = NovaqArtifact(checkpoint.model, checkpoint.tokenizer, run.quantized, novaq.model_dump(),
                             run.report["accounting"], extra, dense_dtype=novaq.dense_dtype)  # fmt: skip
    return artifact, run.report


def evaluate_novaq(novaq_model: NovaqArtifact, data: DataParams, eval: EvalParams) -> dict:
    spec = data.evaluation
    text, source = load_text(spec.source, spec.split, spec.column, spec.config_name, spec.fallback)
    tokens, bos = tokenize_text(novaq_model.tokenizer, text), bos_token(novaq_model.tokenizer)
    windows = evaluation_windows(tokens, eval.window_length, eval.windows, bos=bos)
    result = perplexity(novaq_model.model, windows, eval.batch_size)
    stats = novaq_model.manifest.get("statistics", {})
    return {"perplexity": result.to_dict(), "evaluation_text": source.to_dict(), "statistics": stats}
