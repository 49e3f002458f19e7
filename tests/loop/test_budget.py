"""The loop under the quality budget, through its nodes on a tiny model: a wave that breaks the
budget is reverted even when the waves run out before a second strike, one within it is kept, and
the report says which checkpoint is passed on and why."""

from __future__ import annotations

import torch

import bird_bone.pipelines.loop.nodes as nodes
from bird_bone.config import BudgetParams, DataParams, EvalParams, HealParams, PruneParams, RegrowParams, StopLossParams
from bird_bone.eval.perplexity import perplexity
from bird_bone.io.checkpoint import Checkpoint
from tests.conftest import make_tiny_llama

CALIBRATION = torch.randint(3, 64, (4, 16), generator=torch.Generator().manual_seed(0))
EVALUATION = torch.randint(3, 64, (2, 16), generator=torch.Generator().manual_seed(1))
SECOND = torch.randint(3, 64, (2, 16), generator=torch.Generator().manual_seed(2))


def run(seed_perplexity: float, budget: BudgetParams | None, waves: int = 2):
    """Two magnitude waves (45 %, then 90 %), no heal, patience 2; strikes need a 1000 % rise."""
    base = Checkpoint(make_tiny_llama(64), None, {})
    data = DataParams(calibration={"source": "x", "batch_size": 2}, evaluation={"source": "x"})
    prune = PruneParams(method="magnitude", target_sparsity=0.9, waves=waves)
    stop_loss = StopLossParams(max_ppl_increase=10.0, patience=2, budget_share=0.5)
    heal, regrow = HealParams(enabled=False), RegrowParams(enabled=False)
    previous, accepted, state = nodes.start_loop(base, {"perplexity": seed_perplexity}, CALIBRATION, EVALUATION, SECOND)
    outputs = []
    for _ in range(waves):
        previous, accepted, record, state = nodes.wave_node(
            previous, accepted, state, base, None, CALIBRATION, EVALUATION, prune, heal, regrow, stop_loss, data,
            EvalParams(batch_size=2), budget, SECOND,
        )  # fmt: skip
        outputs.append((previous, accepted, record, state))
    records, states = [o[2] for o in outputs], [o[3] for o in outputs]
    budget_or_default = budget or BudgetParams()
    report = nodes.finish_loop(
        {"perplexity": seed_perplexity}, previous, prune, heal, stop_loss, budget_or_default, *records, *states
    )
    return outputs, report[0], report[1]


def test_a_wave_over_the_budget_is_reverted_with_patience_two_and_two_waves():
    unbudgeted, _, _ = run(1.0, None)
    p1, p2 = (o[2]["perplexity"] for o in unbudgeted)
    assert p2 > p1  # the 90 % wave is worse than the 45 % one
    # the seed is wave 1's perplexity, the budget wave 2's rise over it: the loop's half keeps wave 1 only
    seed, rise = p1, p2 / p1 - 1
    outputs, report, markdown = run(seed, BudgetParams(max_ppl_increase=rise))
    (wave1, accepted1, record1, state1), (current, accepted, record2, state2) = outputs
    assert record1["status"] == "accepted" and record1["reason"].startswith("within budget")
    assert record2["status"] == "reverted" and record2["reason"].startswith("over budget")
    assert state2["stopped"] and state2["accepted_wave"] == 1
    assert current is wave1 and accepted is wave1  # the model passed on is wave 1's, within budget
    assert perplexity(current.model, EVALUATION, 2).perplexity == record1["perplexity"]
    assert report["final"]["wave"] == 1 and report["final"]["checkpoint"] == "models/waves/wave_1"
    assert report["budget"]["loop_increase"] == rise / 2 and report["budget"]["loop_ceiling"] == seed * (1 + rise / 2)
    assert "Passed on: wave 1" in markdown and "over budget" in markdown


def test_without_any_wave_within_the_budget_the_dense_model_is_passed_on():
    outputs, report, markdown = run(1.0, BudgetParams(max_ppl_increase=0.03))  # a seed nothing can meet
    assert [o[2]["status"] for o in outputs] == ["reverted", "skipped"]
    assert outputs[-1][0].metadata == {} and report["final"]["wave"] == 0  # the baseline checkpoint
    assert "dense baseline" in markdown


def test_the_second_domain_is_reported_before_and_after_every_wave():
    outputs, report, _ = run(1e9, BudgetParams())
    seed_second = perplexity(make_tiny_llama(64), SECOND, 2).perplexity
    assert report["baseline_second_perplexity"] == seed_second
    assert outputs[0][2]["second_previous_perplexity"] == seed_second
    assert outputs[1][2]["second_previous_perplexity"] == outputs[0][2]["second_perplexity"] != seed_second
    assert report["final"]["second_perplexity"] == outputs[1][2]["second_perplexity"]


def test_the_seed_second_perplexity_comes_from_seeding_when_it_scored_the_same_windows():
    base = Checkpoint(make_tiny_llama(64), None, {})
    scored = perplexity(base.model, SECOND, batch_size=2, progress=False).perplexity
    seeded = {"perplexity": 1.0, "second_perplexity": 123.0, "second_windows": SECOND.shape[0]}
    state = nodes.start_loop(base, seeded, CALIBRATION, EVALUATION, SECOND)[2]
    assert state["seed_second_perplexity"] == 123.0  # read, not scored again
    other = {**seeded, "second_windows": SECOND.shape[0] + 1}  # seeding scored other windows: score these
    state = nodes.start_loop(base, other, CALIBRATION, EVALUATION, SECOND)[2]
    assert abs(state["seed_second_perplexity"] - scored) < 1e-3 * scored
