"""Seeding: load the model, snapshot its fingerprints, and measure the baseline."""

from __future__ import annotations

from pathlib import Path

import torch
from pydantic import BaseModel

from bird_bone.config import DataParams, EvalParams, ModelParams
from bird_bone.data.text import load_text
from bird_bone.data.windows import bos_token, evaluation_windows, tokenize_text, window_convention
from bird_bone.eval.harness import run_lm_eval
from bird_bone.eval.metrics import measure_model
from bird_bone.eval.perplexity import perplexity
from bird_bone.io.checkpoint import Checkpoint
from bird_bone.models.loading import load_model
from bird_bone.seeding.fingerprint import git_state, library_versions, params_hash, state_dict_fingerprint
from bird_bone.seeding.report import render_report


def load_base_model(model: ModelParams) -> Checkpoint:
    loaded = load_model(model.source, dtype=model.dtype)
    return Checkpoint(loaded.model, loaded.tokenizer, {"provenance": loaded.provenance.to_dict()})


def load_evaluation_text(data: DataParams) -> tuple[str, dict]:
    spec = data.evaluation
    text, source = load_text(spec.source, spec.split, spec.column, spec.config_name, spec.fallback)
    return text, source.to_dict()


def make_evaluation_windows(checkpoint: Checkpoint, text: str, text_source: dict, eval: EvalParams) -> torch.Tensor:
    tokens = tokenize_text(checkpoint.tokenizer, text)
    name, bos = f"evaluation text '{text_source['spec']}'", bos_token(checkpoint.tokenizer)
    return evaluation_windows(tokens, eval.window_length, eval.windows, name=name, bos=bos)


def make_second_evaluation_windows(checkpoint: Checkpoint, data: DataParams, eval: EvalParams) -> torch.Tensor:
    """Windows of ``data.second_evaluation`` as the evaluation text's are made; [0, L] when there is none."""
    spec = data.second_evaluation
    if spec is None:
        return torch.zeros(0, eval.window_length, dtype=torch.long)
    text, source = load_text(spec.source, spec.split, spec.column, spec.config_name, spec.fallback)
    return make_evaluation_windows(checkpoint, text, source.to_dict(), eval)


def evaluate_model(
    checkpoint: Checkpoint, windows: torch.Tensor, eval: EvalParams, second: torch.Tensor | None = None
) -> dict:
    """Perplexity, size and speed on ``windows``; with ``second`` (the second domain's windows, not
    empty) also ``second_perplexity``, the seed the export's budget judges that text against."""
    location = checkpoint.metadata.get("provenance", {}).get("location")
    files = [location] if location and Path(location).exists() and checkpoint.metadata.get("stage") is None else None
    report = measure_model(checkpoint.model, windows, eval.batch_size, eval.throughput_batches, files)
    report["window_start"] = window_convention(checkpoint.tokenizer)
    if second is not None and second.shape[0] > 0:
        report["second_perplexity"] = perplexity(checkpoint.model, second, eval.batch_size, progress=False).perplexity
        report["second_windows"] = int(second.shape[0])
    return report


def evaluate_tasks(checkpoint: Checkpoint, text_source: dict, eval: EvalParams) -> dict:
    if not eval.tasks:
        return {}
    local_text = text_source["location"] if text_source["kind"] == "file" else None
    return run_lm_eval(
        checkpoint.model,
        checkpoint.tokenizer,
        list(eval.tasks),
        limit=eval.task_limit,
        batch_size=eval.batch_size,
        max_length=eval.window_length,
        local_text=local_text,
    )


def snapshot_seed(checkpoint: Checkpoint, parameters: dict) -> dict:
    plain = {k: v.model_dump() if isinstance(v, BaseModel) else v for k, v in parameters.items()}
    fingerprint = state_dict_fingerprint(checkpoint.model)
    return {
        "provenance": checkpoint.metadata["provenance"],
        "state_dict_sha256": fingerprint["sha256"],
        "tensors": fingerprint["tensors"],
        "parameters": plain,
        "params_sha256": params_hash(plain),
        "libraries": library_versions(),
        "git": git_state(),
    }


def build_report(seed: dict, text_source: dict, metrics: dict, lm_eval: dict) -> tuple[dict, str]:
    report = {
        "title": "baseline (seeding)",
        "model": seed["provenance"],
        "texts": {"evaluation": text_source},
        "metrics": metrics,
        "lm_eval": lm_eval,
        "seed": {k: seed[k] for k in ("state_dict_sha256", "params_sha256", "git", "libraries")},
    }
    return report, render_report(report)
