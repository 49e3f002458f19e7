"""The loop's wave node on a tiny model, without Kedro: what one wave hands the next."""

from __future__ import annotations

import pytest
import torch

import bird_bone.pipelines.loop.nodes as nodes
from bird_bone.config import DataParams, EvalParams, HealParams, PruneParams, RegrowParams, StopLossParams
from bird_bone.io.checkpoint import Checkpoint
from tests.conftest import make_tiny_llama


def run_waves(monkeypatch, heal: HealParams, waves: int = 2):
    counted = []
    real = nodes.probe_loss
    monkeypatch.setattr(nodes, "probe_loss", lambda *a: counted.append(real(*a)) or counted[-1])
    base = Checkpoint(make_tiny_llama(64), None, {})
    calibration = torch.randint(3, 64, (4, 16), generator=torch.Generator().manual_seed(0))
    data = DataParams(calibration={"source": "x", "batch_size": 2}, evaluation={"source": "x"})
    params = (
        PruneParams(method="magnitude", waves=waves),
        heal,
        RegrowParams(windows=2),
        StopLossParams(enabled=False),
    )
    previous, accepted, state = nodes.start_loop(base, {"perplexity": 1e9}, calibration, calibration[:2])
    records = []
    for _ in range(waves):
        previous, accepted, record, state = nodes.wave_node(
            previous, accepted, state, base, None, calibration, calibration[:2], *params, data, EvalParams()
        )
        records.append(record)
    return records, state, counted


def test_a_wave_without_healing_hands_its_probe_loss_to_the_next(monkeypatch):
    import bird_bone.loop.steps as steps

    after = []
    real = steps.probe_loss
    monkeypatch.setattr(steps, "probe_loss", lambda *a: after.append(real(*a)) or after[-1])
    records, state, before = run_waves(monkeypatch, HealParams(enabled=False))
    assert len(before) == 1 and len(after) == 2  # wave 2 did not measure wave 1's model again
    assert records[1]["loss_before"] == records[0]["loss_after_prune"] == after[0]
    assert state["probe_loss"] == records[1]["loss_after_prune"]


def test_a_healed_wave_leaves_the_next_to_measure_its_model(monkeypatch):
    records, state, before = run_waves(monkeypatch, HealParams(steps=1, window_length=8, base="full"))
    assert len(before) == 2 and state["probe_loss"] is None  # healing changed the model after the check
    assert records[1]["loss_before"] == pytest.approx(before[1])
