"""Every parameter of the prune, heal, regrow, stop_loss and lowrank groups reaches its algorithm:
the nodes run on a tiny model with every value off its default, and spies (which record the
arguments, then call the real function) show each value arriving. Each table must name every
field of its group, so a new parameter that is not wired fails here. (``export`` is checked by
tests/pipelines/test_export_pipeline.py, ``model``/``data``/``eval`` by the seeding and prune
pipeline tests, ``novaq`` by tests/quant/test_novaq_params.py.)"""

from __future__ import annotations

import dataclasses
import inspect

import pytest
import torch

from bird_bone.config import (
    BudgetParams,
    DataParams,
    EvalParams,
    HealParams,
    LowRankParams,
    PruneParams,
    RegrowParams,
    StopLossParams,
)
from bird_bone.io.checkpoint import Checkpoint
from bird_bone.prune.registry import PRUNERS
from tests.conftest import make_tiny_llama


def recording(real, calls: dict, key: str):
    """``real``, recording the arguments of its last call under ``key`` (not a mock: it still runs)."""

    def wrapper(*args, **kwargs):
        calls[key] = inspect.signature(real).bind(*args, **kwargs).arguments
        return real(*args, **kwargs)

    return wrapper


def spy(monkeypatch, owner, name: str, calls: dict) -> None:
    monkeypatch.setattr(owner, name, recording(getattr(owner, name), calls, name))


@pytest.fixture
def inputs():
    model = make_tiny_llama(64)
    calibration = torch.randint(3, 64, (4, 16), generator=torch.Generator().manual_seed(0))
    data = DataParams(calibration={"source": "x", "batch_size": 3, "seed": 5}, evaluation={"source": "x"})
    return Checkpoint(model, None, {}), calibration, calibration[:2], data


def run_wave(inputs, prune, heal, regrow, stop_loss, eval, budget=None):
    from bird_bone.pipelines.loop.nodes import make_heal_text, start_loop, wave_node

    base, calibration, evaluation, data = inputs
    teacher = Checkpoint(make_tiny_llama(64, seed=1), None, {})
    heal_text = make_heal_text(teacher, calibration, heal)
    previous, accepted, state = start_loop(base, {"perplexity": 1e9}, calibration, evaluation, None, heal_text)
    args = (previous, accepted, state, teacher, None, calibration, evaluation)
    return wave_node(*args, prune, heal, regrow, stop_loss, data, eval, budget, None, heal_text), teacher


def test_every_loop_parameter_reaches_its_algorithm(monkeypatch, inputs):
    import bird_bone.loop.steps as steps
    import bird_bone.pipelines.loop.nodes as nodes
    import bird_bone.prune.step as step

    calls: dict = {}
    for owner, name in ((step, "prune_layers"), (steps, "micro_heal"), (steps, "regrow"), (steps, "stop_loss_step"),
                        (nodes, "sample_sequences")):  # fmt: skip
        spy(monkeypatch, owner, name, calls)
    spy(monkeypatch, steps, "perplexity", calls)
    prune = PruneParams(method="wanda", target_sparsity=0.4, waves=2, schedule="cubic", blocksize=64,
                        percdamp=0.02, true_sequential=False, prune_embeddings=True)  # fmt: skip
    heal = HealParams(enabled=True, steps=1, base="full", rank=4, alpha=8.0, dropout=0.1, learning_rate=1e-3,
                      target_modules=["q_proj"], batch_size=1, window_length=8, kd_weight=0.5, temperature=3.0,
                      seed=7, data="teacher_samples", samples=3, sample_length=12, lm_weight=0.3)  # fmt: skip
    regrow = RegrowParams(enabled=True, epsilon=0.0, max_fraction=0.2, windows=2, batch_size=1)
    stop_loss = StopLossParams(enabled=True, max_ppl_increase=0.07, patience=3, budget_share=0.25)
    budget = BudgetParams(max_ppl_increase=0.04)
    (_, _, record, _), teacher = run_wave(inputs, prune, heal, regrow, stop_loss, EvalParams(batch_size=1), budget)
    p, h, r, s = calls["prune_layers"], calls["micro_heal"], calls["regrow"], calls["stop_loss_step"]
    sampled = calls["sample_sequences"]
    reached = {
        PruneParams: {
            "method": p["method"] == "wanda",
            "target_sparsity": p["sparsity"] == pytest.approx(0.4 * (1 - 0.5**3)),  # the cubic step 1 of 2
            "waves": record["target_sparsity"] == pytest.approx(0.35),
            "schedule": p["sparsity"] != pytest.approx(0.2),  # not the linear 0.4 / 2
            "pattern": (p["n"], p["m"]) == (0, 0),
            "blocksize": p["blocksize"] == 64,
            "percdamp": p["percdamp"] == 0.02,
            "true_sequential": p["true_sequential"] is False,
            "prune_embeddings": p["include_embeddings"] is True,
            "save_gram": None,  # activation logging: test_activation_parameters_reach_the_calibration_pass
            "structured": None,  # test_structured_parameters_reach_remove_neurons
        },
        HealParams: {
            "enabled": len(record["heal"]["loss"]) == 1,
            "steps": h["steps"] == 1,
            "base": h["base"] == "full",
            "rank": h["rank"] == 4,
            "alpha": h["alpha"] == 8.0,
            "dropout": h["dropout"] == 0.1,
            "learning_rate": h["learning_rate"] == 1e-3,
            "target_modules": list(h["target_modules"]) == ["q_proj"],
            "batch_size": h["batch_size"] == 1,
            "window_length": h["window_length"] == 8,
            "kd_weight": h["kd_weight"] == 0.5 and h["teacher"] is teacher.model,
            "temperature": h["temperature"] == 3.0,
            "seed": h["seed"] == 7 + 1 and sampled["seed"] == 7,  # + the wave
            "data": h["windows"].shape == (3, 12) and sampled["model"] is teacher.model,
            "samples": sampled["count"] == 3,
            "sample_length": sampled["length"] == 12,
            "lm_weight": h["lm_weight"] == 0.3,
        },
        RegrowParams: {
            "enabled": "regrow" in calls,
            "epsilon": record["regrown_weights"] > 0,  # epsilon 0: any rise regrows
            "max_fraction": r["max_fraction"] == 0.2,
            "windows": r["windows"].shape[0] == 2,
            "batch_size": r["batch_size"] == 1,
        },
        StopLossParams: {
            "enabled": "stop_loss_step" in calls,
            "max_ppl_increase": s["max_increase"] == 0.07,
            "patience": s["patience"] == 3,
            "budget_share": s["budget_increase"] == pytest.approx(0.25 * 0.04),
        },
    }
    for group, fields in reached.items():
        assert set(fields) == set(group.model_fields), f"{group.__name__}: wire the new field and add it here"
        assert [name for name, ok in fields.items() if ok is False] == [], group.__name__
    assert calls["perplexity"]["batch_size"] == 1  # eval.batch_size


def test_disabled_heal_regrow_and_stop_loss_do_nothing(monkeypatch, inputs):
    import bird_bone.loop.steps as steps

    calls: dict = {}
    for name in ("micro_heal", "regrow", "stop_loss_step"):
        spy(monkeypatch, steps, name, calls)
    off = {"enabled": False}
    (_, _, record, state), _ = run_wave(
        inputs, PruneParams(method="magnitude"), HealParams(**off), RegrowParams(**off, epsilon=0.0),
        StopLossParams(**off), EvalParams(),
    )  # fmt: skip
    assert calls["micro_heal"]["steps"] == 0 and "regrow" not in calls and "stop_loss_step" not in calls
    assert record["regrown_weights"] == 0 and state["status"] == "accepted"


def test_structured_parameters_reach_remove_neurons(monkeypatch, inputs):
    calls: dict = {}
    entry = PRUNERS["structured"]
    monkeypatch.setitem(
        PRUNERS, "structured", dataclasses.replace(entry, remove=recording(entry.remove, calls, "remove"))
    )
    structured = {"fraction": 0.25, "max_fraction_per_cluster": 0.5, "clusters": 2, "pattern_tokens": 16,
                  "width_multiple": 8}  # fmt: skip
    prune = PruneParams(method="structured", waves=2, structured=structured)
    run_wave(inputs, prune, HealParams(enabled=False), RegrowParams(enabled=False), StopLossParams(), EvalParams())
    args = calls["remove"]
    assert args["fraction"] == 0.25  # wave 1: fraction x 1
    assert {k: args[k] for k in structured if k != "fraction"} == {
        k: v for k, v in structured.items() if k != "fraction"
    }
    assert args["seed"] == 5 and args["batch_size"] == 3  # data.calibration.seed / batch_size
    assert set(structured) == set(PruneParams.model_fields["structured"].annotation.model_fields)


def test_activation_parameters_reach_the_calibration_pass(monkeypatch, inputs):
    import bird_bone.pipelines.prune.nodes as nodes

    calls: dict = {}
    spy(monkeypatch, nodes, "log_activations", calls)
    base, calibration, _, data = inputs
    for method, clusters in (("structured", 3), ("wanda", 0)):
        prune = PruneParams(method=method, save_gram=True, structured={"clusters": 3, "pattern_tokens": 16})
        stats, _ = nodes.log_activation_statistics(base, calibration, data, prune)
        args = calls["log_activations"]
        assert args["gram"] is True and args["clusters"] == clusters and args["pattern_tokens"] == 16
        assert args["seed"] == 5 and args["batch_size"] == 3
        assert "model.layers.0.mlp.up_proj.input_gram" in stats


def test_every_lowrank_parameter_reaches_the_factorization(monkeypatch, inputs):
    import bird_bone.pipelines.lowrank.nodes as nodes

    calls: dict = {}
    spy(monkeypatch, nodes, "factorize_linears", calls)
    base, calibration, evaluation, _ = inputs
    masks = {"model.layers.0.self_attn.o_proj": torch.zeros(32, 32, dtype=torch.bool)}
    checkpoint = Checkpoint(base.model, None, {}, masks)
    stats = {f"{n}.input_sq_norms": torch.rand(32) + 0.1 for n in ("model.layers.0.self_attn.o_proj",
                                                                  "model.layers.1.self_attn.o_proj")}  # fmt: skip
    lowrank = LowRankParams(enabled=True, modules=["o_proj"], energy=0.9, activation_aware=True, allow_masked=False)
    _, report = nodes.low_rank_merge(checkpoint, stats, evaluation, {"perplexity": 7.0}, lowrank, EvalParams())
    args = calls["factorize_linears"]
    reached = {
        "enabled": "factorize_linears" in calls,
        "modules": args["names"] == ["model.layers.1.self_attn.o_proj"],
        "energy": args["energy"] == 0.9,
        "activation_aware": set(args["column_scales"]) == {"model.layers.1.self_attn.o_proj"},
        "allow_masked": list(report["skipped"]) == ["model.layers.0.self_attn.o_proj"],  # pruned: left alone
    }
    assert set(reached) == set(LowRankParams.model_fields)
    assert [name for name, ok in reached.items() if ok is False] == []
    assert report["perplexity_before"] == 7.0  # the loop's, not measured again
