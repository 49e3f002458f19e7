"""Numbers that go bad stop the run (issue 17, item 6): a diverged wave is reverted, nothing
non-finite is exported, and the reports stay strict JSON."""

from __future__ import annotations

import json
import math

import pytest
import torch

from bird_bone.config import CalibrationParams, EvalParams, HealParams, PruneParams, RegrowParams, StopLossParams
from bird_bone.errors import ArtifactError
from bird_bone.eval.perplexity import perplexity
from bird_bone.export.gguf import write_gguf
from bird_bone.heal.loop import run_wave
from bird_bone.heal.stoploss import LoopState
from bird_bone.io.checkpoint import Checkpoint
from bird_bone.pipelines.datasets import AtomicJSONDataset


def strict_loads(text: str):
    def refuse(constant):
        raise ValueError(f"bare {constant} is not JSON")

    return json.loads(text, parse_constant=refuse)


def test_a_diverged_heal_is_a_failed_wave_that_reverts(tiny_model, tiny_tokenizer):
    torch.manual_seed(0)
    calibration = torch.randint(3, len(tiny_tokenizer), (4, 16))
    evaluation = torch.randint(3, len(tiny_tokenizer), (2, 16))
    ppl = perplexity(tiny_model, evaluation, 2, progress=False).perplexity
    baseline = Checkpoint(tiny_model, tiny_tokenizer, {})
    outcome = run_wave(
        1,
        baseline,
        baseline,
        LoopState(0, 0, ppl, ppl, 0, False, "baseline"),
        None,
        calibration,
        evaluation,
        PruneParams(method="magnitude", waves=2),
        HealParams(steps=3, base="full", learning_rate=1e30, window_length=8, batch_size=2),
        RegrowParams(enabled=False),
        StopLossParams(patience=2),
        CalibrationParams(source="embedded", windows=4, window_length=16, batch_size=2),
        EvalParams(windows=2, window_length=16, batch_size=2),
    )
    assert not math.isfinite(outcome.record["perplexity"])
    assert outcome.state.status == "reverted" and outcome.state.stopped and outcome.state.accepted_wave == 0
    assert outcome.checkpoint is baseline  # the model going forward is the accepted one, not the NaN one


def test_reports_are_strict_json_with_null_for_non_finite_numbers(tmp_path):
    path = tmp_path / "wave_1.json"
    AtomicJSONDataset(filepath=str(path)).save(
        {"perplexity": float("nan"), "delta": float("inf"), "waves": [{"loss": -math.inf, "ok": 1.5}]}
    )
    assert strict_loads(path.read_text()) == {"perplexity": None, "delta": None, "waves": [{"loss": None, "ok": 1.5}]}


def test_a_model_with_non_finite_weights_is_not_exported(tmp_path, tiny_model, tiny_tokenizer):
    with torch.no_grad():
        tiny_model.model.layers[0].self_attn.o_proj.weight[3] = float("nan")
    with pytest.raises(ArtifactError, match=r"tensor 'model.layers.0.self_attn.o_proj.weight' holds 32 of 1024"):
        write_gguf(tiny_model, tiny_tokenizer, tmp_path / "out.gguf", "F32")
    assert list(tmp_path.iterdir()) == []
