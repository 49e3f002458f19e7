"""Nodes of the growth-prune-heal loop: each wave unpacks the parameter models into the steps of
:func:`bird_bone.prune.step.prune_step` and :mod:`bird_bone.loop.steps` (prune, regrow, heal, judge)."""

from __future__ import annotations

import copy
import hashlib
import logging
import time

import torch

from bird_bone.budget import ceiling
from bird_bone.config import (
    BudgetParams,
    DataParams,
    EvalParams,
    HealParams,
    PruneParams,
    RegrowParams,
    StopLossParams,
)
from bird_bone.data.windows import bos_token
from bird_bone.heal.report import curve_csv, curve_rows, healing_figure, render_loop_report
from bird_bone.heal.samples import sample_sequences
from bird_bone.heal.stoploss import LoopState
from bird_bone.io.checkpoint import Checkpoint
from bird_bone.loop.steps import (
    fingerprint,
    heal_step,
    judge_step,
    probe_loss,
    regrow_step,
    skip_reason,
    text_perplexities,
)
from bird_bone.prune.layerwise import mask_sparsity
from bird_bone.prune.sparsity import gguf_sparsity_warning
from bird_bone.prune.step import neurons_removed, prune_step

log = logging.getLogger(__name__)


def _tensor_sha(tensor: torch.Tensor) -> str:
    return hashlib.sha256(tensor.contiguous().numpy().tobytes()).hexdigest()[:16]


def start_loop(
    baseline: Checkpoint,
    metrics: dict,
    calibration: torch.Tensor,
    evaluation: torch.Tensor,
    second: torch.Tensor | None = None,
    heal_text: torch.Tensor | None = None,
    eval: EvalParams | None = None,
):
    """The loop's starting state: wave 0 is the dense baseline, accepted. The state also carries the
    seed's perplexity on both texts, for the budget and the reports of every wave (the second text's from
    seeding's metrics when it scored the same windows, else scored here)."""
    ppl = metrics["perplexity"]
    state = LoopState(0, 0, ppl, ppl, 0, False, "baseline").to_dict()
    provenance = baseline.metadata.get("provenance", {})
    shas = [_tensor_sha(t) for t in (calibration, evaluation, second, heal_text) if t is not None]
    state["fingerprint"] = fingerprint(provenance, ppl, *shas)
    batch = eval.batch_size if eval is not None else 4
    second_ppl = metrics.get("second_perplexity")
    if second is None or second_ppl is None or metrics.get("second_windows") != second.shape[0]:
        second_ppl = text_perplexities(baseline.model, {"second": second}, batch)["second"]
    return baseline, baseline, {**state, "seed_perplexity": ppl, "seed_second_perplexity": second_ppl}


def make_heal_text(teacher: Checkpoint, calibration: torch.Tensor, heal: HealParams) -> torch.Tensor:
    """The text every wave heals on, made once per run: ``heal.samples`` sequences sampled from the
    dense teacher (``heal.data: teacher_samples``, seeded by ``heal.seed``) or the calibration windows."""
    if heal.data == "calibration" or not heal.enabled or heal.steps == 0:
        return calibration
    tokenizer = teacher.tokenizer
    special = list(getattr(tokenizer, "all_special_ids", []) or [])
    bos = bos_token(tokenizer) if tokenizer is not None else None
    return sample_sequences(
        teacher.model, heal.samples, heal.sample_length, bos=bos, exclude=special, seed=heal.seed, batch_size=32
    )


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
    budget: BudgetParams | None = None,
    second: torch.Tensor | None = None,
    heal_text: torch.Tensor | None = None,
):
    """One wave; a wave finished by an earlier run with the same inputs and parameters is resumed.
    ``budget``: judged against the seed's perplexity (the loop uses ``stop_loss.budget_share`` of it;
    None: no budget). ``second``: windows of the second domain, reported before and after the wave.
    ``heal_text``: what the heal trains on (:func:`make_heal_text`; None: the calibration windows).

    The state carries ``probe_loss``, the probe loss of the model going forward when the wave knew
    it without another forward pass (nothing healed it after the regrowth check), so the next wave
    does not compute it again."""
    wave = previous_state["wave"] + 1
    params = [p.model_dump() for p in (prune, heal, regrow, stop_loss, data.calibration, eval, budget) if p is not None]
    key = fingerprint(wave, previous_state["fingerprint"], params)
    if resume is not None and resume["state"].get("fingerprint") == key:
        log.info("wave %d: finished by an earlier run with the same inputs; resuming after it", wave)
        return _resumed(resume, previous, accepted)
    carried = {k: previous_state.get(k) for k in ("seed_perplexity", "seed_second_perplexity")}
    state = LoopState.from_dict(previous_state)
    why = skip_reason(state, wave, prune.waves)
    if why is not None:
        log.info("wave %d skipped: %s", wave, why)
        skipped = {**state.to_dict(), **carried, "wave": wave, "status": "skipped", "fingerprint": key}
        record = {"wave": wave, "method": prune.method, "pattern": prune.pattern, "status": "skipped", "reason": why}
        return previous, accepted, record, skipped
    limits = _limits(previous_state, budget, stop_loss)
    texts = {"heal": calibration if heal_text is None else heal_text, "second": second}
    args = (wave, previous, state, previous_state.get("probe_loss"), teacher, calibration, evaluation, texts, limits)
    current, new_state, record, loss = _run_wave(*args, prune, heal, regrow, stop_loss, data, eval)
    record["second_previous_perplexity"] = previous_state.get("second_perplexity", carried["seed_second_perplexity"])
    if new_state.status == "reverted":
        current, loss = _reverted_to(new_state.to_dict(), previous, accepted), None
    new_accepted = current if new_state.status in ("accepted", "reverted") else accepted
    second_ppl = record.get("second_perplexity") if new_state.status != "reverted" else None
    state_dict = {**new_state.to_dict(), **carried, "fingerprint": key, "probe_loss": loss}
    return current, new_accepted, record, {**state_dict, "second_perplexity": second_ppl}


def _limits(previous_state: dict, budget: BudgetParams | None, stop_loss: StopLossParams) -> dict:
    """The keywords of :func:`judge_step` for the budget: the seed's perplexity and the rise the
    loop may use (its ``stop_loss.budget_share`` of ``budget.max_ppl_increase``)."""
    if budget is None or previous_state.get("seed_perplexity") is None:
        return {}
    return {
        "seed_perplexity": previous_state["seed_perplexity"],
        "budget_increase": stop_loss.budget_increase(budget.max_ppl_increase),
    }


def _reverted_to(state: dict, previous: Checkpoint, accepted: Checkpoint) -> Checkpoint:
    """A reverted wave's model going forward: the wave before it when the budget reverted to it (the
    last one within budget), else the last accepted wave."""
    return previous if state["accepted_wave"] == state["wave"] - 1 else accepted


def _resumed(resume: dict, previous: Checkpoint, accepted: Checkpoint):
    state = resume["state"]
    if state["status"] == "skipped":
        return previous, accepted, resume["record"], state
    if state["status"] == "reverted":
        checkpoint = _reverted_to(state, previous, accepted)
        return checkpoint, checkpoint, resume["record"], state
    checkpoint = resume["checkpoint"]()
    return checkpoint, checkpoint if state["status"] == "accepted" else accepted, resume["record"], state


def _run_wave(
    wave,
    previous,
    state,
    known_loss,
    teacher,
    calibration,
    evaluation,
    texts,
    limits,
    prune,
    heal,
    regrow,
    stop_loss,
    data,
    eval,
):
    """Prune, regrow, heal and judge a copy of ``previous``'s model: (checkpoint, state, record,
    the probe loss of the checkpoint when known without another forward pass, else None).
    ``texts``: the heal text and the second domain's windows; ``limits``: the budget's keywords."""
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
    scored = {"evaluation": evaluation, "second": texts["second"]} if steps else {}
    record["before_heal"] = text_perplexities(model, scored, eval.batch_size) if steps else None
    healed = heal_step(
        model,
        texts["heal"],
        masks,
        steps,
        teacher=teacher.model if teacher is not None else None,
        seed=heal.seed + wave,
        bos=bos_token(previous.tokenizer),
        **heal.options(),
    )
    record["heal"] = healed.to_dict()
    record["sparsity"] = mask_sparsity(masks) if masks else 0.0
    judge = {**stop_loss.model_dump(exclude={"budget_share"}), **limits}
    new_state, verdict = judge_step(model, evaluation, eval.batch_size, state, wave, **judge)
    record.update(verdict)
    record["second_perplexity"] = text_perplexities(model, {"s": texts["second"]}, eval.batch_size)["s"]
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
    budget: BudgetParams,
    *records_and_states,
):
    """The loop report (the budget, each wave's verdict and why, the checkpoint passed on), the
    healing curves (CSV rows and figure), the loop's metrics and the final checkpoint."""
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
            "reason": reverted.get("reason"),
            "reverted_to_wave": state["accepted_wave"],
            "accepted_perplexity": state["accepted_perplexity"] or base,
        }
        final_record = next((r for r in done if r["wave"] == state["accepted_wave"]), None)
    seed_second = states[0].get("seed_second_perplexity") if states else None
    report = {
        "model": final.metadata.get("provenance", {}).get("spec", "?"),
        "baseline_perplexity": base,
        "baseline_second_perplexity": seed_second,
        "eval_windows": baseline_metrics.get("eval_windows"),
        "budget": _loop_budget(base, budget, stop_loss),
        "prune": prune.model_dump(),
        "heal": heal.model_dump(),
        "stop_loss": stop_loss.model_dump(),
        "waves": records,
        "final": _final_summary(final_record, base, seed_second),
        "stop_loss_acted": acted,
    }
    report["gguf_warning"] = gguf_sparsity_warning(final.model)  # a sparse model pays nothing in a GGUF
    final_summary = report["final"]
    metrics = {"perplexity": final_summary["perplexity"], "sparsity": final_summary["sparsity"], "waves": len(done)}
    metrics["second_perplexity"] = final_summary["second_perplexity"]
    return (
        report,
        render_loop_report(report),
        curve_csv(curve_rows(base, records)),
        healing_figure(base, records),
        metrics,
        final,  # saved as a link to the wave directory that holds it
    )


def _loop_budget(seed: float, budget: BudgetParams, stop_loss: StopLossParams) -> dict:
    share = stop_loss.budget_increase(budget.max_ppl_increase)
    return {
        "max_ppl_increase": budget.max_ppl_increase,
        "budget_share": stop_loss.budget_share,
        "loop_increase": share,
        "seed_perplexity": seed,
        "loop_ceiling": ceiling(seed, share),
        "enforced": stop_loss.enabled,
    }


def _final_summary(record: dict | None, seed: float, seed_second: float | None) -> dict:
    """The checkpoint the loop passes on: its wave, status, sparsity and perplexity on both texts."""
    if record is None:
        return {"wave": 0, "status": "dense baseline", "sparsity": 0.0, "perplexity": seed,
                "second_perplexity": seed_second, "checkpoint": "models/waves/wave_0 (the dense baseline)"}  # fmt: skip
    summary = {key: record.get(key) for key in ("wave", "status", "sparsity", "perplexity", "second_perplexity")}
    summary["checkpoint"] = f"models/waves/wave_{record['wave']}"
    if "neurons_removed" in record:
        summary.update(neurons_removed=record["neurons_removed"], mlp_widths=record["mlp_widths"])
    return summary
