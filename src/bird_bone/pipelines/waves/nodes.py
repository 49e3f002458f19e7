"""Nodes of the growth-prune-heal loop; the work is done by :mod:`bird_bone.heal.loop`."""

from __future__ import annotations

import hashlib
import logging

import torch

from bird_bone.config import DataParams, EvalParams, HealParams, PruneParams, RegrowParams, StopLossParams
from bird_bone.heal.loop import fingerprint, run_wave
from bird_bone.heal.report import curve_csv, curve_rows, healing_figure, render_loop_report
from bird_bone.heal.stoploss import LoopState
from bird_bone.io.checkpoint import Checkpoint

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
    """One wave; a wave finished by an earlier run with the same inputs and parameters is resumed."""
    wave = previous_state["wave"] + 1
    params = [p.model_dump() for p in (prune, heal, regrow, stop_loss, data.calibration, eval)]
    key = fingerprint(wave, previous_state["fingerprint"], params)
    if resume is not None and resume["state"].get("fingerprint") == key:
        log.info("wave %d: finished by an earlier run with the same inputs; resuming after it", wave)
        state = resume["state"]
        checkpoint = resume["checkpoint"]() if state["status"] not in ("reverted", "skipped") else accepted
        new_accepted = checkpoint if state["status"] == "accepted" else accepted
        if state["status"] == "skipped":
            checkpoint = previous
        return checkpoint, new_accepted, checkpoint.masks or {}, resume["record"], state
    outcome = run_wave(
        wave,
        previous,
        accepted,
        LoopState.from_dict(previous_state),
        teacher,
        calibration,
        evaluation,
        prune,
        heal,
        regrow,
        stop_loss,
        data.calibration,
        eval,
    )
    state = {**outcome.state.to_dict(), "fingerprint": key}
    new_accepted = outcome.checkpoint if outcome.state.status == "accepted" else accepted
    return outcome.checkpoint, new_accepted, outcome.checkpoint.masks or {}, outcome.record, state


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
