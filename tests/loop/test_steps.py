"""The loop's step functions on a tiny random model: regrow, heal and judge, and the probe loss."""

from __future__ import annotations

import math

import pytest
import torch

from bird_bone.eval.perplexity import perplexity
from bird_bone.heal.stoploss import LoopState
from bird_bone.loop.steps import (
    fingerprint,
    heal_step,
    judge_step,
    probe_loss,
    regrow_step,
    skip_reason,
    text_perplexities,
)
from bird_bone.prune.layerwise import prune_layers
from tests.conftest import make_tiny_llama


def data(n: int = 4, length: int = 16) -> torch.Tensor:
    return torch.randint(3, 64, (n, length), generator=torch.Generator().manual_seed(0))


def test_probe_loss_is_the_log_perplexity():
    model, windows = make_tiny_llama(64), data()
    assert probe_loss(model, windows, 2) == pytest.approx(math.log(perplexity(model, windows, 2).perplexity))
    assert probe_loss(model, windows, 2) > math.log(64) - 1  # a random model: about log(vocabulary)


@pytest.mark.parametrize("epsilon", [0.0, 10.0])
def test_regrow_step_reopens_only_when_the_loss_rose_more_than_epsilon(epsilon):
    model, windows = make_tiny_llama(64), data()
    before = probe_loss(model, windows, 2)
    masks = prune_layers(model, "magnitude", 0.5)
    pruned = sum(int(m.sum()) for m in masks.values())
    new, record = regrow_step(model, windows, masks, before, epsilon=epsilon, max_fraction=0.1, batch_size=2)
    assert record["loss_before"] == before and record["loss_after_prune"] == probe_loss(model, windows, 2)
    regrown = pruned - sum(int(m.sum()) for m in new.values())
    assert record["regrown_weights"] == regrown
    if epsilon == 0.0:  # magnitude pruning to 50 % raises the loss: regrowth runs
        assert regrown == sum(int(0.1 * int(m.sum())) for m in masks.values()) > 0
        assert record["regrown_fraction"] == pytest.approx(regrown / pruned)
        assert "regrow_seconds" in record
    else:
        assert regrown == 0 and record["regrown_fraction"] == 0.0 and "regrow_seconds" not in record


def test_regrow_step_disabled_keeps_the_masks():
    model, windows = make_tiny_llama(64), data()
    masks = prune_layers(model, "magnitude", 0.5)
    new, record = regrow_step(model, windows, masks, 0.0, enabled=False, epsilon=0.0)
    assert all(torch.equal(new[k], masks[k]) for k in masks) and record["regrown_weights"] == 0


def test_heal_step_trains_the_kept_weights_through_the_masks_and_clips_the_window():
    model, windows = make_tiny_llama(64), data(length=16)
    masks = prune_layers(model, "magnitude", 0.5)
    before = {n: model.get_submodule(n).weight.detach().clone() for n in masks}
    # window_length 256 is longer than the windows: the step cuts pieces of 16 tokens instead
    result = heal_step(model, windows, masks, 2, window_length=256, base="full", learning_rate=1e-2, progress=False)
    assert len(result.loss) == 2 and result.merged_modules == 14
    for name, mask in masks.items():
        weight = model.get_submodule(name).weight
        assert (weight[mask] == 0).all(), name
        assert (weight[~mask] != before[name][~mask]).float().mean() > 0.9, name


def test_heal_step_uses_the_teacher_only_with_a_distillation_weight():
    model, teacher, windows = make_tiny_llama(64), make_tiny_llama(64, seed=1), data()
    plain = heal_step(model, windows, {}, 1, window_length=8, teacher=teacher, base="full", progress=False)
    assert plain.kd == [0.0]
    distilled = heal_step(model, windows, {}, 1, window_length=8, teacher=teacher, kd_weight=1.0, base="full",
                          progress=False)  # fmt: skip
    assert distilled.kd[0] > 0.0


def test_judge_step_accepts_reverts_and_records_the_perplexity():
    model, windows = make_tiny_llama(64), data()
    ppl = perplexity(model, windows, 2).perplexity
    state, record = judge_step(model, windows, 2, LoopState(0, 0, ppl * 2, ppl * 2), 1)
    assert state.status == record["status"] == "accepted" and state.accepted_wave == 1
    assert record["perplexity"] == ppl and record["delta"] == pytest.approx(-0.5)
    worse = LoopState(1, 1, ppl / 2, ppl / 2)
    state, record = judge_step(model, windows, 2, worse, 2, max_ppl_increase=0.03, patience=1)
    assert state.status == "reverted" and record["reverted_to_wave"] == 1 and state.stopped
    state, record = judge_step(model, windows, 2, worse, 2, enabled=False)
    assert state.status == "accepted" and state.accepted_perplexity == ppl


def test_skip_reason_and_fingerprint():
    assert skip_reason(LoopState(), 1, 2) is None
    assert skip_reason(LoopState(), 3, 2) == "prune.waves is 2"
    assert skip_reason(LoopState(stopped=True), 1, 2) == "the stop-loss stopped pruning"
    assert fingerprint(1, "a", [{"x": 1}]) == fingerprint(1, "a", [{"x": 1}]) != fingerprint(2, "a", [{"x": 1}])


def test_judge_step_reverts_over_the_budget_and_says_why():
    model, windows = make_tiny_llama(64), data()
    ppl = perplexity(model, windows, 2).perplexity
    seed = ppl / 1.02  # the model is 2 % over the seed
    start = LoopState(0, 0, seed, seed)
    state, record = judge_step(model, windows, 2, start, 1, seed_perplexity=seed, budget_increase=0.015)
    assert state.status == "reverted" and state.stopped and record["reverted_to_wave"] == 0
    assert record["budget"]["seed_increase"] == pytest.approx(0.02) and record["reason"].startswith("over budget")
    state, record = judge_step(model, windows, 2, start, 1, seed_perplexity=seed, budget_increase=0.025)
    assert state.status == "accepted" and record["reason"].startswith("within budget")
    assert record["budget"]["ceiling"] == pytest.approx(seed * 1.025)


def test_text_perplexities_skips_absent_or_empty_texts():
    model, windows = make_tiny_llama(64), data()
    got = text_perplexities(model, {"a": windows, "b": None, "c": windows[:0]}, 2)
    assert got == {"a": perplexity(model, windows, 2).perplexity, "b": None, "c": None}
