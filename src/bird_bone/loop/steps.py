"""The steps of one wave of the growth-prune-heal loop after pruning: RigL regrowth, QLoRA
micro-heal and the judgement (evaluation and stop-loss). Each takes scalars and tensors, changes
the model in place where it says so, and returns what the wave record keeps. Pruning itself is
:func:`bird_bone.prune.step.prune_step`, shared with one-shot pruning."""

from __future__ import annotations

import hashlib
import json
import logging
import math
import time

import torch
from torch import nn

from bird_bone.budget import ceiling, increase
from bird_bone.eval.perplexity import perplexity
from bird_bone.heal.qlora import HealResult, micro_heal
from bird_bone.heal.regrow import regrow
from bird_bone.heal.stoploss import LoopState, relative_increase, stop_loss_step

log = logging.getLogger(__name__)


def fingerprint(*parts) -> str:
    """Short SHA-256 of JSON-able parts (parameters, the previous wave's fingerprint)."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def probe_loss(model: nn.Module, windows: torch.Tensor, batch_size: int) -> float:
    """Mean next-token cross-entropy (nats) on ``windows``."""
    return math.log(perplexity(model, windows, batch_size, progress=False).perplexity)


def skip_reason(state: LoopState, wave: int, waves: int) -> str | None:
    """Why wave ``wave`` does nothing (the stop-loss stopped pruning, or only ``waves`` are asked)."""
    if state.stopped:
        return "the stop-loss stopped pruning"
    return f"prune.waves is {waves}" if wave > waves else None


def regrow_step(
    model: nn.Module,
    probe: torch.Tensor,
    masks: dict[str, torch.Tensor],
    loss_before: float,
    *,
    enabled: bool = True,
    epsilon: float = 0.05,
    max_fraction: float = 0.05,
    batch_size: int = 2,
) -> tuple[dict[str, torch.Tensor], dict]:
    """RigL regrowth when pruning raised the probe loss by more than ``epsilon`` (relative) over
    ``loss_before``: re-opens up to ``max_fraction`` of each layer's pruned weights, at zero.
    Returns the masks and the record: losses, regrown weights and their share of the pruned ones."""
    loss_after = probe_loss(model, probe, batch_size)
    record: dict = {"loss_before": loss_before, "loss_after_prune": loss_after}
    regrown = 0
    if enabled and masks and relative_increase(loss_after, loss_before) > epsilon:
        start = time.perf_counter()
        masks, per_layer = regrow(model, probe, masks, max_fraction, batch_size)
        regrown = sum(per_layer.values())
        record["regrow_seconds"] = time.perf_counter() - start
    pruned_total = sum(int(v.sum()) for v in masks.values()) + regrown
    record["regrown_weights"] = regrown
    record["regrown_fraction"] = regrown / pruned_total if pruned_total else 0.0
    return masks, record


def heal_step(
    model: nn.Module,
    windows: torch.Tensor,
    masks: dict[str, torch.Tensor],
    steps: int,
    *,
    window_length: int = 256,
    teacher: nn.Module | None = None,
    kd_weight: float = 0.0,
    **options,
) -> HealResult:
    """QLoRA micro-heal of ``model`` in place for ``steps`` steps, merged through ``masks``, on
    pieces of at most ``window_length`` tokens of ``windows``; the teacher is used only when
    ``kd_weight`` > 0. ``options``: the other keywords of :func:`bird_bone.heal.qlora.micro_heal`."""
    return micro_heal(
        model,
        windows,
        masks,
        steps,
        window_length=min(window_length, windows.shape[1]),
        teacher=teacher if kd_weight > 0 else None,
        kd_weight=kd_weight,
        **options,
    )


def judge_step(
    model: nn.Module,
    evaluation: torch.Tensor,
    batch_size: int,
    state: LoopState,
    wave: int,
    *,
    enabled: bool = True,
    max_ppl_increase: float = 0.03,
    patience: int = 2,
    seed_perplexity: float | None = None,
    budget_increase: float | None = None,
) -> tuple[LoopState, dict]:
    """Perplexity of ``model`` on ``evaluation`` and the stop-loss verdict on wave ``wave``: the new
    state (its ``status`` says whether the wave is accepted, on probation or reverted) and the record,
    whose ``reason`` says why. With ``seed_perplexity`` and ``budget_increase`` the wave is also
    judged against the loop's share of the quality budget (:func:`bird_bone.budget.meets`)."""
    ppl = perplexity(model, evaluation, batch_size).perplexity
    previous = state.previous_perplexity
    record = {
        "perplexity": ppl,
        "previous_perplexity": previous,
        "delta": relative_increase(ppl, previous) if previous else None,
    }
    budget = (seed_perplexity, budget_increase) if seed_perplexity is not None and budget_increase is not None else None
    if budget is not None:
        record["budget"] = {"seed_perplexity": seed_perplexity, "increase": budget_increase}
        record["budget"].update(ceiling=ceiling(*budget), seed_increase=increase(ppl, seed_perplexity))
    if enabled or not math.isfinite(ppl):  # a non-finite perplexity is a failed wave, stop-loss or not
        limits = {"seed_perplexity": seed_perplexity, "budget_increase": budget_increase} if enabled else {}
        new_state = stop_loss_step(state, wave, ppl, max_ppl_increase, patience, **limits)
    else:
        new_state = LoopState(wave, wave, ppl, ppl, 0, False, "accepted")
    record["status"] = new_state.status
    record["reason"] = verdict_reason(new_state, record, enabled, max_ppl_increase, patience)
    if new_state.status == "reverted":
        log.warning("stop-loss: wave %d reverted to wave %d: %s", wave, new_state.accepted_wave, record["reason"])
        record["reverted_to_wave"] = new_state.accepted_wave
    return new_state, record


def verdict_reason(state: LoopState, record: dict, enabled: bool, max_increase: float, patience: int) -> str:
    """One sentence: why the stop-loss gave wave ``state.wave`` its status."""
    ppl, delta, budget = record["perplexity"], record["delta"], record.get("budget")
    if not math.isfinite(ppl):
        return f"perplexity {ppl} is not finite: a failed wave"
    if not enabled:
        return "stop-loss off: every wave is kept"
    within = (
        f"{ppl:.3f} is {budget['seed_increase']:+.2%} over the seed {budget['seed_perplexity']:.3f}, "
        f"the loop's budget allows {budget['increase']:+.2%} (ceiling {budget['ceiling']:.3f})"
        if budget
        else None
    )
    if state.status == "reverted" and budget and budget["seed_increase"] > budget["increase"]:
        return f"over budget: {within}"
    rise = f"{delta:+.2%} over the wave before" if delta is not None else "no wave before"
    if state.status == "reverted":
        return f"{state.strikes} waves in a row rose more than {max_increase:.1%} (patience {patience}); {rise}"
    prefix = f"within budget: {within}; " if budget else ""
    if state.status == "probation":
        return f"{prefix}strike {state.strikes} of {patience}: {rise}, more than {max_increase:.1%}"
    return f"{prefix}{rise}"


def text_perplexities(model: nn.Module, texts: dict[str, torch.Tensor | None], batch_size: int) -> dict:
    """Perplexity of ``model`` on each named set of windows; None for a set that is absent or empty."""
    return {
        name: perplexity(model, windows, batch_size, progress=False).perplexity
        if windows is not None and windows.numel()
        else None
        for name, windows in texts.items()
    }
