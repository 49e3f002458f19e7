"""Factorize the chosen projections of the loop's final model and report size and perplexity."""

from __future__ import annotations

import copy
import logging

import torch

from bird_bone.config import EvalParams, LowRankParams
from bird_bone.eval.perplexity import perplexity
from bird_bone.eval.speed import parameter_count
from bird_bone.io.checkpoint import Checkpoint
from bird_bone.lowrank.svd import factorize_linears
from bird_bone.models.adapters import prunable_linears

log = logging.getLogger(__name__)


def low_rank_merge(
    checkpoint: Checkpoint,
    statistics: dict,
    windows: torch.Tensor,
    loop_metrics: dict,
    lowrank: LowRankParams,
    eval: EvalParams,
):
    """The final compressed checkpoint and a JSON report of what factorization changed.

    The perplexity before factorization is the loop's (``loop.metrics``, measured on the same
    windows and batch size when its final wave was judged), not measured again.

    LoRA deltas are merged by the heal step of every wave (through the masks), so none remain here;
    the report says so. Pruned projections are skipped unless ``lowrank.allow_masked``: a product
    of factors is dense, so their masks would no longer hold.
    """
    masks = checkpoint.masks or {}
    chosen = [n for n in prunable_linears(checkpoint.model) if n.rsplit(".", 1)[-1] in lowrank.modules]
    skipped = {n: "pruned (mask would not hold); set lowrank.allow_masked" for n in chosen if n in masks}
    if lowrank.allow_masked:
        skipped = {}
    names = [n for n in chosen if n not in skipped]
    report = {
        "enabled": lowrank.enabled,
        "modules": lowrank.modules,
        "energy": lowrank.energy,
        "activation_aware": lowrank.activation_aware,
        "lora_deltas_left": 0,
        "skipped": skipped,
        "factorized": {},
    }
    if not (lowrank.enabled and names):
        report["note"] = "no projection chosen for factorization; the checkpoint passes through unchanged"
        log.info("low-rank: %s", report["note"])
        return checkpoint, report
    model = copy.deepcopy(checkpoint.model)
    before = parameter_count(model)
    ppl_before = loop_metrics["perplexity"]
    scales = None
    if lowrank.activation_aware:
        scales = {n: statistics[f"{n}.input_sq_norms"].sqrt() for n in names if f"{n}.input_sq_norms" in statistics}
    report["factorized"] = factorize_linears(model, names, lowrank.energy, scales)
    after = parameter_count(model)
    new_masks = {
        k: v for k, v in masks.items() if k not in report["factorized"] or not report["factorized"][k]["replaced"]
    }
    report.update(
        parameters_before=before["parameters"],
        parameters_after=after["parameters"],
        perplexity_before=ppl_before,
        perplexity_after=perplexity(model, windows, eval.batch_size).perplexity,
        retired_masks=sorted(set(masks) - set(new_masks)),
    )
    log.info(
        "low-rank: %d -> %d parameters, perplexity %.3f -> %.3f",
        report["parameters_before"],
        report["parameters_after"],
        report["perplexity_before"],
        report["perplexity_after"],
    )
    metadata = {**checkpoint.metadata, "stage": "lowrank", "lowrank": lowrank.model_dump()}
    return Checkpoint(model, checkpoint.tokenizer, metadata, new_masks or None), report
