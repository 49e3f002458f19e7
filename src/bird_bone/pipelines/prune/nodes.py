"""Pruning: calibration windows, activation logging, pruning waves, evaluation of the result."""

from __future__ import annotations

import copy

import torch

from bird_bone.calibration.activations import activation_heatmap, log_activations
from bird_bone.config import DataParams, PruneParams
from bird_bone.data.text import load_text
from bird_bone.data.windows import bos_token, calibration_windows, tokenize_text
from bird_bone.io.checkpoint import Checkpoint
from bird_bone.models.adapters import mlp_widths
from bird_bone.prune.report import render_prune_report
from bird_bone.prune.structured import remove_neurons
from bird_bone.prune.wave import check_pattern, prune_in_waves, sparsity_schedule


def make_calibration_windows(checkpoint: Checkpoint, data: DataParams) -> tuple[torch.Tensor, dict]:
    spec = data.calibration
    text, source = load_text(spec.source, spec.split, spec.column, spec.config_name, spec.fallback)
    tokens = tokenize_text(checkpoint.tokenizer, text)
    name = f"calibration text '{source.spec}'"
    bos = bos_token(checkpoint.tokenizer)
    return calibration_windows(tokens, spec.window_length, spec.windows, spec.seed, name, bos), source.to_dict()


def log_activation_statistics(checkpoint: Checkpoint, windows: torch.Tensor, data: DataParams, prune: PruneParams):
    s = prune.structured
    stats = log_activations(
        checkpoint.model,
        windows,
        data.calibration.batch_size,
        prune.save_gram,
        s.clusters,
        s.pattern_tokens,
        data.calibration.seed,
    )
    return stats, activation_heatmap(stats, windows.numel())


def prune_model(checkpoint: Checkpoint, windows: torch.Tensor, data: DataParams, prune: PruneParams):
    model = copy.deepcopy(checkpoint.model)  # the baseline stays intact for later comparisons
    if prune.method == "structured":
        partitions, summaries = _remove_neurons_in_waves(model, windows, data, prune)
    else:
        n, m = prune.nm
        check_pattern(model, n, m)
        schedule = sparsity_schedule(prune.target_sparsity, prune.waves, prune.schedule)
        wave_masks, summaries = prune_in_waves(
            model,
            windows,
            prune.method,
            schedule,
            n,
            m,
            blocksize=prune.blocksize,
            percdamp=prune.percdamp,
            batch_size=data.calibration.batch_size,
            include_embeddings=prune.prune_embeddings,
            true_sequential=prune.true_sequential,
        )
        partitions = {f"wave_{k}": masks for k, masks in enumerate(wave_masks, start=1)}
    metadata = {**checkpoint.metadata, "stage": "prune", "prune": prune.model_dump()}
    return Checkpoint(model, checkpoint.tokenizer, metadata), partitions, summaries


def _remove_neurons_in_waves(model, windows, data: DataParams, prune: PruneParams) -> tuple[dict, list]:
    s, kept, partitions, summaries = prune.structured, {}, {}, []
    for k in range(1, prune.waves + 1):
        kept = remove_neurons(
            model,
            windows,
            s.fraction * k,
            s.max_fraction_per_cluster,
            s.clusters,
            s.pattern_tokens,
            data.calibration.seed,
            data.calibration.batch_size,
            kept,
            s.width_multiple,
        )
        widths = mlp_widths(model)
        partitions[f"wave_{k}"] = {f"{name}.kept_neurons": index for name, index in kept.items()}
        removed = 1 - sum(widths) / (len(widths) * model.config.intermediate_size)
        summaries.append({"wave": k, "pattern": "structured", "neurons_removed": removed, "mlp_widths": widths})
    return partitions, summaries


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
