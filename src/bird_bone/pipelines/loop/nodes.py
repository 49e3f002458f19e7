"""Nodes of the growth-prune-heal loop: each wave unpacks the parameter models into the steps of
:func:`bird_bone.prune.step.prune_step` and :mod:`bird_bone.loop.steps` (prune, regrow, heal, judge)."""

from __future__ import annotations

import copy
import hashlib
import logging
import time

import torch

from bird_bone.config import DataParams, EvalParams, HealParams, PruneParams, RegrowParams, StopLossParams
from bird_bone.data.windows import bos_token
from bird_bone.heal.report import curve_csv, curve_rows, healing_figure, render_loop_report
from bird_bone.heal.stoploss import LoopState
from bird_bone.io.checkpoint import Checkpoint
from bird_bone.loop.steps import fingerprint, heal_step, judge_step, probe_loss, regrow_step, skip_reason
from bird_bone.prune.layerwise import mask_sparsity
from bird_bone.prune.step import neurons_removed, prune_step

log = logging.getLogger(__name__)


def _tensor_sha(tensor: torch.Tensor) -> str:
    return hashlib.sha256(tensor.contiguous().numpy().tobytes()).hexdigest()[:16]


def start_loop(baseline: Checkpoint, metrics: dict, calibration: torch.Tensor, evaluation: torch.Tensor):
    """The loop's starting state: wave 0 is the dense baseline, accepted."""
    ppl = metrics["perplexity"]
    state = LoopState(0, 0, ppl, ppl, 0, False, "baseline").to_dict()
    provenance = baseline.metadata.get("provenance", {})
    state["fingerprint"] = fingerprint(provenance, ppl, _tensor_sha(calibration), _tensor_sha(evaluation))
    return baseline, baseline, state


def wave_node(
    previous: Checkpoint,
    accepted: Checkpoint,
    previous_state: dict,
    teacher: Checkpoint,
    resume: dict | None,
    calibration: torch.Tensor,
    evaluation: torch.Tensor,
    prune: PruneParams,
    heal: HealParams,
    regrow: RegrowParams,
    stop_loss: StopLossParams,
    data: DataParams,
    eval: EvalParams,
):
    """One wave; a wave finished by an earlier run with the same inputs and parameters is resumed.

    The state carries ``probe_loss``, the probe loss of the model going forward when the wave knew
    it without another forward pass (nothing healed it after the regrowth check), so the next wave
    does not compute it again."""
    wave = previous_state["wave"] + 1
    params = [p.model_dump() for p in (prune, heal, regrow, stop_loss, data.calibration, eval)]
    key = fingerprint(wave, previous_state["fingerprint"], params)
    if resume is not None and resume["state"].get("fingerprint") == key:
        log.info("wave %d: finished by an earlier run with the same inputs; resuming after it", wave)
        return _resumed(resume, previous, accepted)
    state = LoopState.from_dict(previous_state)
    why = skip_reason(state, wave, prune.waves)
    if why is not None:
        log.info("wave %d skipped: %s", wave, why)
        skipped = {**state.to_dict(), "wave": wave, "status": "skipped", "fingerprint": key}
        record = {"wave": wave, "method": prune.method, "pattern": prune.pattern, "status": "skipped", "reason": why}
        return previous, accepted, record, skipped
    args = (wave, previous, state, previous_state.get("probe_loss"), teacher, calibration, evaluation)
    current, new_state, record, loss = _run_wave(*args, prune, heal, regrow, stop_loss, data, eval)
    if new_state.status == "reverted":
        current, loss = accepted, None
    new_accepted = current if new_state.status == "accepted" else accepted
    state_dict = {**new_state.to_dict(), "fingerprint": key, "probe_loss": loss}
    return current, new_accepted, record, state_dict


def _resumed(resume: dict, previous: Checkpoint, accepted: Checkpoint):
    state = resume["state"]
    checkpoint = resume["checkpoint"]() if state["status"] not in ("reverted", "skipped") else accepted
    new_accepted = checkpoint if state["status"] == "accepted" else accepted
    if state["status"] == "skipped":
        checkpoint = previous
    return checkpoint, new_accepted, resume["record"], state


def _run_wave(
    wave, previous, state, known_loss, teacher, calibration, evaluation, prune, heal, regrow, stop_loss, data, eval
):
    """Prune, regrow, heal and judge a copy of ``previous``'s model: (checkpoint, state, record,
    the probe loss of the checkpoint when known without another forward pass, else None)."""
    start = time.perf_counter()
    record = {"wave": wave, "method": prune.method, "pattern": prune.pattern}
    model = copy.deepcopy(previous.model)
    masks = {k: v.clone() for k, v in (previous.masks or {}).items()}
    probe = calibration[: regrow.windows]
    loss_before = known_loss if known_loss is not None else probe_loss(model, probe, regrow.batch_size)
    step = prune_step(
        model,
        prune.method,
        prune.amount(wave),
        calibration,
        masks,
        batch_size=data.calibration.batch_size,
        seed=data.calibration.seed,
        **prune.options(),
    )
    if prune.removes_neurons:
        record.update(neurons_removed(model))
    record["prune_seconds"] = step.seconds
    record["target_sparsity"] = None if prune.nm[0] else prune.target(wave)
    record["sparsity_after_prune"] = mask_sparsity(step.masks) if step.masks else 0.0
    masks, regrown = regrow_step(model, probe, step.masks, loss_before, **regrow.model_dump(exclude={"windows"}))
    record.update(regrown)
    steps = heal.steps if heal.enabled else 0
    healed = heal_step(
        model,
        calibration,
        masks,
        steps,
        teacher=teacher.model if teacher is not None else None,
        seed=heal.seed + wave,
        bos=bos_token(previous.tokenizer),
        **heal.options(),
    )
    record["heal"] = healed.to_dict()
    record["sparsity"] = mask_sparsity(masks) if masks else 0.0
    new_state, verdict = judge_step(model, evaluation, eval.batch_size, state, wave, **stop_loss.model_dump())
    record.update(verdict)
    metadata = {**previous.metadata, "stage": f"wave_{wave}", "wave": wave, "prune": prune.model_dump()}
    record["seconds"] = time.perf_counter() - start
    log.info(
        "wave %d: sparsity %.4f, perplexity %.3f, %s", wave, record["sparsity"], record["perplexity"], new_state.status
    )
    known = regrown["loss_after_prune"] if steps == 0 else None  # regrowth opens weights at zero
    return Checkpoint(model, previous.tokenizer, metadata, masks), new_state, record, known


def finish_loop(
    baseline_metrics: dict,
    final: Checkpoint,
    prune: PruneParams,
    heal: HealParams,
    stop_loss: StopLossParams,
    *records_and_states,
):
    """The loop report, the healing curves (CSV rows and figure) and the final checkpoint."""
    half = len(records_and_states) // 2
    records, states = list(records_and_states[:half]), list(records_and_states[half:])
    base = baseline_metrics["perplexity"]
    done = [r for r in records if r["status"] != "skipped"]
    reverted = next((r for r in records if r["status"] == "reverted"), None)
    acted, final_record = None, done[-1] if done else None
    if reverted is not None:
        state = next(s for s in states if s["wave"] == reverted["wave"])
        acted = {
            "wave": reverted["wave"],
            "perplexity": reverted["perplexity"],
            "strikes": state["strikes"],
            "reverted_to_wave": state["accepted_wave"],
            "accepted_perplexity": state["accepted_perplexity"] or base,
        }
        final_record = next((r for r in done if r["wave"] == state["accepted_wave"]), None)
    final_summary = {
        "wave": final_record["wave"] if final_record else 0,
        "status": final_record["status"] if final_record else "dense baseline",
        "sparsity": final_record["sparsity"] if final_record else 0.0,
        "perplexity": final_record["perplexity"] if final_record else base,
    }
    report = {
        "model": final.metadata.get("provenance", {}).get("spec", "?"),
        "baseline_perplexity": base,
        "eval_windows": baseline_metrics.get("eval_windows"),
        "prune": prune.model_dump(),
        "heal": heal.model_dump(),
        "stop_loss": stop_loss.model_dump(),
        "waves": records,
        "final": final_summary,
        "stop_loss_acted": acted,
    }
    rows = curve_rows(base, records)
    metrics = {"perplexity": final_summary["perplexity"], "sparsity": final_summary["sparsity"], "waves": len(done)}
    return (
        report,
        render_loop_report(report),
        curve_csv(rows),
        healing_figure(base, records),
        metrics,
        final,  # saved as a link to the wave directory that holds it
    )
