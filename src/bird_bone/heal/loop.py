"""One wave of the growth-prune-heal loop: prune, regrow (RigL), micro-heal (QLoRA), evaluate,
and the stop-loss decision. Each wave starts from a copy of the previous wave's model, so the
accepted model is never changed in place and a revert is exact."""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import math
import time
from dataclasses import dataclass

import torch

from bird_bone.config import (
    CalibrationParams,
    EvalParams,
    HealParams,
    PruneParams,
    RegrowParams,
    StopLossParams,
)
from bird_bone.eval.perplexity import perplexity
from bird_bone.heal.qlora import micro_heal
from bird_bone.heal.regrow import regrow
from bird_bone.heal.stoploss import LoopState, relative_increase, stop_loss_step
from bird_bone.io.checkpoint import Checkpoint
from bird_bone.models.adapters import mlp_widths
from bird_bone.prune.structured import remove_neurons
from bird_bone.prune.wave import mask_sparsity, prune_wave, sparsity_schedule

log = logging.getLogger(__name__)


@dataclass
class WaveOutcome:
    checkpoint: Checkpoint  # the model going forward: this wave's, or the accepted one after a revert
    state: LoopState
    record: dict  # JSON-ready: sparsity, perplexity, delta, heal curve, regrowth, status, seconds


def fingerprint(*parts) -> str:
    """Short SHA-256 of JSON-able parts (parameters, the previous wave's fingerprint)."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def calibration_loss(model, windows: torch.Tensor, batch_size: int) -> float:
    """Mean next-token cross-entropy (nats) on ``windows``."""
    return math.log(perplexity(model, windows, batch_size, progress=False).perplexity)


def run_wave(
    wave: int,
    previous: Checkpoint,
    accepted: Checkpoint,
    state: LoopState,
    teacher: Checkpoint | None,
    calibration: torch.Tensor,
    evaluation: torch.Tensor,
    prune: PruneParams,
    heal: HealParams,
    regrow_params: RegrowParams,
    stop_loss: StopLossParams,
    calibration_params: CalibrationParams,
    eval_params: EvalParams,
) -> WaveOutcome:
    """Run wave ``wave`` (1-based) of ``prune.waves`` on a copy of ``previous``'s model."""
    start = time.perf_counter()
    record = {"wave": wave, "method": prune.method, "pattern": prune.pattern}
    if state.stopped or wave > prune.waves:
        why = "the stop-loss stopped pruning" if state.stopped else f"prune.waves is {prune.waves}"
        log.info("wave %d skipped: %s", wave, why)
        skipped = LoopState(**{**state.to_dict(), "wave": wave, "status": "skipped"})
        return WaveOutcome(previous, skipped, {**record, "status": "skipped", "reason": why})

    model = copy.deepcopy(previous.model)
    masks = {k: v.clone() for k, v in (previous.masks or {}).items()}
    probe = calibration[: regrow_params.windows]
    loss_before = calibration_loss(model, probe, regrow_params.batch_size)

    # 1. pruning wave to the scheduled cumulative sparsity (earlier masks stay pruned)
    target = sparsity_schedule(prune.target_sparsity, prune.waves, prune.schedule)[wave - 1]
    t = time.perf_counter()
    if prune.method == "structured":
        s = prune.structured
        remove_neurons(
            model,
            calibration,
            s.fraction * wave,
            s.max_fraction_per_cluster,
            s.clusters,
            s.pattern_tokens,
            calibration_params.seed,
            calibration_params.batch_size,
            width_multiple=s.width_multiple,
        )
        widths = mlp_widths(model)
        record["mlp_widths"] = widths
        record["neurons_removed"] = 1 - sum(widths) / (len(widths) * model.config.intermediate_size)
    else:
        n, m = prune.nm
        masks = prune_wave(
            model,
            prune.method,
            target,
            calibration,
            n,
            m,
            prior_masks=masks,
            blocksize=prune.blocksize,
            percdamp=prune.percdamp,
            batch_size=calibration_params.batch_size,
            include_embeddings=prune.prune_embeddings,
            true_sequential=prune.true_sequential,
        )
    record["prune_seconds"] = time.perf_counter() - t
    record["target_sparsity"] = None if prune.nm[0] else target
    record["sparsity_after_prune"] = mask_sparsity(masks) if masks else 0.0

    # 2. RigL regrowth when the pruning raised the loss too much (zero-initialised, then healed)
    loss_after = calibration_loss(model, probe, regrow_params.batch_size)
    record["loss_before"], record["loss_after_prune"] = loss_before, loss_after
    rise = relative_increase(loss_after, loss_before)
    regrown = 0
    if regrow_params.enabled and masks and rise > regrow_params.epsilon:
        t = time.perf_counter()
        masks, per_layer = regrow(model, probe, masks, regrow_params.max_fraction, regrow_params.batch_size)
        regrown = sum(per_layer.values())
        record["regrow_seconds"] = time.perf_counter() - t
    pruned_total = sum(int(v.sum()) for v in masks.values()) + regrown
    record["regrown_weights"] = regrown
    record["regrown_fraction"] = regrown / pruned_total if pruned_total else 0.0

    # 3. QLoRA micro-heal, merged through the masks
    steps = heal.steps if heal.enabled else 0
    result = micro_heal(
        model,
        calibration,
        masks,
        steps,
        rank=heal.rank,
        alpha=heal.alpha,
        dropout=heal.dropout,
        learning_rate=heal.learning_rate,
        target_modules=heal.target_modules,
        base=heal.base,
        batch_size=heal.batch_size,
        window_length=min(heal.window_length, calibration.shape[1]),
        teacher=teacher.model if teacher is not None and heal.kd_weight > 0 else None,
        kd_weight=heal.kd_weight,
        temperature=heal.temperature,
        seed=heal.seed + wave,
    )
    record["heal"] = result.to_dict()

    # 4. evaluation and the stop-loss
    ppl = perplexity(model, evaluation, eval_params.batch_size).perplexity
    previous_ppl = state.previous_perplexity
    record.update(
        sparsity=mask_sparsity(masks) if masks else 0.0,
        perplexity=ppl,
        previous_perplexity=previous_ppl,
        delta=relative_increase(ppl, previous_ppl) if previous_ppl else None,
    )
    if stop_loss.enabled:
        new_state = stop_loss_step(state, wave, ppl, stop_loss.max_ppl_increase, stop_loss.patience)
    else:
        new_state = LoopState(wave, wave, ppl, ppl, 0, False, "accepted")
    record["status"] = new_state.status
    metadata = {**previous.metadata, "stage": f"wave_{wave}", "wave": wave, "prune": prune.model_dump()}
    current = Checkpoint(model, previous.tokenizer, metadata, masks)
    if new_state.status == "reverted":
        log.warning(
            "stop-loss: wave %d perplexity %.3f makes %d waves in a row rising over %.1f%%; "
            "reverting to wave %d (%.3f) and stopping",
            wave,
            ppl,
            new_state.strikes,
            100 * stop_loss.max_ppl_increase,
            new_state.accepted_wave,
            new_state.accepted_perplexity or float("nan"),
        )
        record["reverted_to_wave"] = new_state.accepted_wave
        current = accepted
    record["seconds"] = time.perf_counter() - start
    log.info("wave %d: sparsity %.4f, perplexity %.3f, %s", wave, record["sparsity"], ppl, new_state.status)
    return WaveOutcome(current, new_state, record)


def accepted_after(outcome: WaveOutcome, previous_accepted: Checkpoint) -> Checkpoint:
    """The last accepted checkpoint once ``outcome``'s wave is done."""
    return outcome.checkpoint if outcome.state.status == "accepted" else previous_accepted
