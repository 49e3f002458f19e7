"""Pruning: calibration windows, activation logging, pruning waves, evaluation of the result."""

from __future__ import annotations

import copy

import torch

from bird_bone.calibration.activations import activation_heatmap, log_activations
from bird_bone.config import DataParams, PruneParams
from bird_bone.data.text import load_text
from bird_bone.data.windows import bos_token, calibration_windows, tokenize_text
from bird_bone.io.checkpoint import Checkpoint
from bird_bone.prune.layerwise import sparsity_summary
from bird_bone.prune.registry import PRUNERS
from bird_bone.prune.report import render_prune_report
from bird_bone.prune.step import PruneStep, neurons_removed, prune_step


def make_calibration_windows(checkpoint: Checkpoint, data: DataParams) -> tuple[torch.Tensor, dict]:
    spec = data.calibration
    text, source = load_text(spec.source, spec.split, spec.column, spec.config_name, spec.fallback)
    tokens = tokenize_text(checkpoint.tokenizer, text)
    name = f"calibration text '{source.spec}'"
    bos = bos_token(checkpoint.tokenizer)
    return calibration_windows(tokens, spec.window_length, spec.windows, spec.seed, name, bos), source.to_dict()


def log_activation_statistics(checkpoint: Checkpoint, windows: torch.Tensor, data: DataParams, prune: PruneParams):
    """One calibration pass: k-means clusters only when the method's registry entry needs them."""
    s, seed = prune.structured, data.calibration.seed
    clusters = s.clusters if "clusters" in PRUNERS[prune.method].statistics else 0
    stats = log_activations(checkpoint.model, windows, data.calibration.batch_size, prune.save_gram, clusters,
                            s.pattern_tokens, seed)  # fmt: skip
    return stats, activation_heatmap(stats, windows.numel())


def prune_model(checkpoint: Checkpoint, windows: torch.Tensor, data: DataParams, prune: PruneParams):
    """``prune.waves`` pruning steps without healing, on a copy (the baseline stays intact)."""
    model = copy.deepcopy(checkpoint.model)
    calibration, step, partitions, summaries = data.calibration, PruneStep(), {}, []
    for k in range(1, prune.waves + 1):
        step = prune_step(
            model, prune.method, prune.amount(k), windows, step.masks, step.kept,
            batch_size=calibration.batch_size, seed=calibration.seed, **prune.options(),
        )  # fmt: skip
        partitions[f"wave_{k}"], summary = _step_summary(model, prune, k, step)
        summaries.append(summary)
    metadata = {**checkpoint.metadata, "stage": "prune", "prune": prune.model_dump()}
    return Checkpoint(model, checkpoint.tokenizer, metadata), partitions, summaries


def _step_summary(model, prune: PruneParams, k: int, step) -> tuple[dict, dict]:
    """The step's partition (masks, or the kept neurons' indices) and its JSON-ready summary."""
    if prune.removes_neurons:
        kept = {f"{name}.kept_neurons": index for name, index in step.kept.items()}
        return kept, {"wave": k, "pattern": "structured", **neurons_removed(model)}
    n, m = prune.nm
    summary = {
        "wave": k,
        "target_sparsity": None if n else prune.target(k),
        "pattern": f"{n}:{m}" if n else "unstructured",
    }
    masks = {name: mask.clone() for name, mask in step.masks.items()}
    return masks, {**summary, **sparsity_summary(step.masks), "seconds": step.seconds}


def build_prune_report(
    checkpoint: Checkpoint,
    calibration_source: dict,
    baseline: dict,
    pruned: dict,
    waves: list[dict],
    prune: PruneParams,
) -> tuple[dict, str]:
    report = {
        "model": checkpoint.metadata.get("provenance", {}),
        "calibration": calibration_source,
        "prune": prune.model_dump(),
        "baseline": baseline,
        "pruned": pruned,
        "waves": waves,
    }
    return report, render_prune_report(report)
