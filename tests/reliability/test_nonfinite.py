"""Numbers that go bad stop the run (issue 17, item 6): a diverged wave is reverted, nothing
non-finite is exported, and the reports stay strict JSON."""

from __future__ import annotations

import json
import math

import pytest
import torch

from bird_bone.config import DataParams, EvalParams, HealParams, PruneParams, RegrowParams, StopLossParams
from bird_bone.errors import ArtifactError
from bird_bone.eval.perplexity import perplexity
from bird_bone.export.gguf import write_gguf
from bird_bone.heal.stoploss import LoopState
from bird_bone.io.checkpoint import Checkpoint
from bird_bone.pipelines.datasets import AtomicJSONDataset
from bird_bone.pipelines.loop.nodes import wave_node


def strict_loads(text: str):
    def refuse(constant):
        raise ValueError(f"bare {constant} is not JSON")

    return json.loads(text, parse_constant=refuse)


@pytest.mark.parametrize("stop_loss_enabled", [True, False])
def test_a_diverged_heal_is_a_failed_wave_that_reverts(tiny_model, tiny_tokenizer, stop_loss_enabled):
    torch.manual_seed(0)
    calibration = torch.randint(3, len(tiny_tokenizer), (4, 16))
    evaluation = torch.randint(3, len(tiny_tokenizer), (2, 16))
    ppl = perplexity(tiny_model, evaluation, 2, progress=False).perplexity
    baseline = Checkpoint(tiny_model, tiny_tokenizer, {})
    state = {**LoopState(0, 0, ppl, ppl, 0, False, "baseline").to_dict(), "fingerprint": "0"}
    data = {"source": "embedded", "windows": 4, "window_length": 16, "batch_size": 2}
    current, accepted, record, new_state = wave_node(
        baseline,
        baseline,
        state,
        baseline,
        None,
        calibration,
        evaluation,
        PruneParams(method="magnitude", waves=2),
        HealParams(steps=3, base="full", learning_rate=1e30, window_length=8, batch_size=2),
        RegrowParams(enabled=False),
        StopLossParams(enabled=stop_loss_enabled, patience=2),
        DataParams(calibration=data, evaluation={"source": "embedded"}),
        EvalParams(windows=2, window_length=16, batch_size=2),
    )
    assert not math.isfinite(record["perplexity"])
    assert new_state["status"] == "reverted" and new_state["stopped"] and new_state["accepted_wave"] == 0
    assert current is baseline and accepted is baseline  # the model going forward is the accepted one


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
