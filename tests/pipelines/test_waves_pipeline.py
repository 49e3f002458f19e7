"""The growth-prune-heal loop through Kedro on a tiny model: a namespace per wave, masks that hold
through healing, stop-loss reverts, reports and curves, and resume after a killed run."""

from __future__ import annotations

import json

import pytest
import torch

from bird_bone.io.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from bird_bone.io.tensors import load_tensors
from tests.conftest import TINY_TEXT
from tests.pipelines.conftest import run_session
from tests.pipelines.test_prune_pipeline import tiny_params


def loop_params(project, waves=2, **extra):
    params = tiny_params(project, method="wanda", target_sparsity=0.6, waves=waves)
    params["heal"] = {"steps": 3, "window_length": 8, "batch_size": 2, "learning_rate": 1e-3}
    params["regrow"] = {"windows": 2, "epsilon": 0.0, "max_fraction": 0.1}
    for key, value in extra.items():
        params[key] = {**params.get(key, {}), **value}
    return params


@pytest.fixture
def tiny_project(project, tiny_model, tiny_tokenizer):
    save_checkpoint(Checkpoint(tiny_model, tiny_tokenizer), project / "tiny")
    (project / "text.txt").write_text(TINY_TEXT)
    return project


def test_loop_runs_every_wave_and_keeps_masks_through_healing(tiny_project, monkeypatch):
    import bird_bone.pipelines.datasets as datasets

    reads = []  # every tensor file the run reads from disk
    real = datasets.load_tensors
    monkeypatch.setattr(datasets, "load_tensors", lambda path: reads.append(str(path)) or real(path))
    run_session(tiny_project, loop_params(tiny_project, waves=2, stop_loss={"enabled": False}), "__default__")
    for name in ("evaluation_windows", "calibration_windows", "activation_statistics"):
        assert len([p for p in reads if name in p]) <= 1, reads  # made in this run: cached, never read back
    records = [json.loads((tiny_project / f"data/08_reporting/waves/wave_{k}.json").read_text()) for k in (1, 2)]
    assert [r["status"] for r in records] == ["accepted", "accepted"]
    assert all(len(r["heal"]["loss"]) == 3 for r in records)
    masks = load_tensors(tiny_project / "data/06_models/masks/wave_2.safetensors")
    assert sorted(p.name for p in (tiny_project / "data/06_models/masks").iterdir()) == [
        "wave_1.safetensors",
        "wave_2.safetensors",
    ]  # the dense wave_0 has none
    for k in (1, 2):  # written once: the wave's masks file is the checkpoint's, under a second name
        assert (tiny_project / f"data/06_models/masks/wave_{k}.safetensors").samefile(
            tiny_project / f"models/waves/wave_{k}/masks.safetensors"
        )
    model = load_checkpoint(tiny_project / "models/compressed").model
    dense = load_checkpoint(tiny_project / "models/baseline").model  # Wanda leaves kept weights as they were
    for name, mask in masks.items():
        weight, before = model.get_submodule(name).weight, dense.get_submodule(name).weight
        assert (weight[mask] == 0).all(), name
        assert (weight[~mask] != before[~mask]).float().mean() > 0.9, name  # healing moved the kept weights
    # regrowth (epsilon 0 always triggers) re-opened 10 % of the pruned weights after pruning
    assert records[0]["regrown_fraction"] == pytest.approx(0.1, abs=0.02)
    assert records[1]["sparsity"] > records[0]["sparsity"]
    report = (tiny_project / "data/08_reporting/loop_report.md").read_text()
    assert "| 2 |" in report and "accepted" in report
    curve = (tiny_project / "data/08_reporting/healing_curve.csv").read_text().splitlines()
    assert curve[0] == "wave,step,loss,perplexity,sparsity" and len(curve) == 1 + 1 + 2 * (3 + 1)
    assert (tiny_project / "data/08_reporting/healing_curves.png").stat().st_size > 1000


def test_stop_loss_reverts_and_skips_the_remaining_waves(tiny_project):
    # every rise is a strike (limit 0) and one strike is enough: the first wave that makes the
    # perplexity worse is reverted, and pruning stops there
    params = loop_params(
        tiny_project,
        waves=3,
        stop_loss={"max_ppl_increase": 0.0, "patience": 1},
        prune={"method": "magnitude", "target_sparsity": 0.9, "waves": 3},
        heal={"steps": 0},
    )
    run_session(tiny_project, params, "__default__")
    records = [json.loads((tiny_project / f"data/08_reporting/waves/wave_{k}.json").read_text()) for k in (1, 2, 3)]
    statuses = [r["status"] for r in records]
    assert "reverted" in statuses, statuses  # magnitude pruning to 90 % without healing does hurt
    first = statuses.index("reverted")
    assert all(s == "accepted" for s in statuses[:first]) and all(s == "skipped" for s in statuses[first + 1 :])
    report = json.loads((tiny_project / "data/08_reporting/loop_report.json").read_text())
    assert report["stop_loss_acted"]["wave"] == first + 1
    assert report["final"]["wave"] == first
    expected = load_checkpoint(tiny_project / ("models/baseline" if first == 0 else f"models/waves/wave_{first}"))
    final = load_checkpoint(tiny_project / "models/compressed")
    for key, value in expected.model.state_dict().items():
        assert torch.equal(final.model.state_dict()[key], value), key
    assert "Stop-loss acted at wave" in (tiny_project / "data/08_reporting/loop_report.md").read_text()


def test_bad_heal_parameter_fails_before_any_work(tiny_project):
    with pytest.raises(Exception, match=r"heal.steps must be >= 0"):
        run_session(tiny_project, loop_params(tiny_project, heal={"steps": -1}), "__default__")
    assert not (tiny_project / "models").exists()


def test_a_killed_run_resumes_after_the_last_finished_wave(tiny_project):
    import os
    import signal
    import subprocess
    import sys
    import time
    from pathlib import Path

    import yaml

    params = loop_params(tiny_project, waves=3, heal={"steps": 80}, stop_loss={"enabled": False})
    (tiny_project / "conf/local/parameters.yml").write_text(yaml.safe_dump(params))
    kedro = [str(Path(sys.executable).with_name("kedro")), "run"]
    env = {**os.environ, "KEDRO_DISABLE_TELEMETRY": "true"}
    first = subprocess.Popen(
        kedro, cwd=tiny_project, env=env, start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    state1 = tiny_project / "data/07_model_output/waves/wave_1_state.json"
    deadline = time.monotonic() + 600
    while not state1.exists() and first.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    time.sleep(0.2)  # inside wave 2 (its 80 heal steps alone take over a second)
    os.killpg(first.pid, signal.SIGKILL)
    first.wait()
    assert state1.exists(), first.stdout.read().decode()[-3000:]
    assert not (tiny_project / "data/07_model_output/waves/wave_2_state.json").exists()
    weights = next((tiny_project / "models/waves/wave_1").glob("*.safetensors"))
    stamp = weights.stat().st_mtime_ns

    second = subprocess.run(kedro, cwd=tiny_project, env=env, capture_output=True, text=True, timeout=900)
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    log = second.stdout + second.stderr
    assert "wave 1: finished by an earlier run" in log
    assert "wave 2: finished by an earlier run" not in log
    assert weights.stat().st_mtime_ns == stamp  # wave 1 was not recomputed nor rewritten
    report = json.loads((tiny_project / "data/08_reporting/loop_report.json").read_text())
    assert [w["wave"] for w in report["waves"]] == [1, 2, 3]
    leftovers = [p for p in tiny_project.rglob("*") if p.name.endswith(".tmp") or ".old-" in p.name]
    assert leftovers == []
    for k in (1, 2, 3):
        load_checkpoint(tiny_project / f"models/waves/wave_{k}")  # every checkpoint is whole
