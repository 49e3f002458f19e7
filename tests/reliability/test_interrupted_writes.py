"""Interrupted writes leave nothing behind (issue 17, item 8): what a killed writer left is removed
by the next write or run, and a damaged checkpoint of a finished wave is computed again."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest

from bird_bone.errors import ArtifactError
from bird_bone.io.atomic import atomic_file, atomic_write_text, remove_stale_temporaries
from bird_bone.io.checkpoint import Checkpoint, checkpoint_problem, save_checkpoint
from bird_bone.pipelines.datasets import WaveResumeDataset
from tests.tiny_project import tool_env

KILLED_WRITE = """
import os, signal, sys
from bird_bone.io.atomic import atomic_file, atomic_directory
with atomic_file(sys.argv[1]) as handle:
    handle.write(b"x" * 100_000)
    handle.flush()
    with atomic_directory(sys.argv[2]) as tmp:
        (tmp / "weights.bin").write_bytes(b"y" * 1000)
        os.kill(os.getpid(), signal.SIGKILL)
"""


def killed_write(tmp_path):
    done = subprocess.run([sys.executable, "-c", KILLED_WRITE, str(tmp_path / "big.bin"), str(tmp_path / "ckpt")],
                          env=tool_env(), capture_output=True, timeout=120)  # fmt: skip
    assert done.returncode == -signal.SIGKILL
    left = sorted(p.name for p in tmp_path.iterdir())
    assert len(left) == 2 and all(name.startswith((".big.bin.p", ".ckpt.p")) for name in left), left


def test_the_next_write_of_a_file_removes_what_a_killed_write_left(tmp_path):
    killed_write(tmp_path)
    atomic_write_text(tmp_path / "big.bin", "whole")
    assert (tmp_path / "big.bin").read_text() == "whole"
    assert not any(p.name.startswith(".big.bin.") for p in tmp_path.iterdir())


def test_a_run_removes_every_stale_temporary_under_its_artifact_directories(tmp_path):
    (tmp_path / "data").mkdir()
    killed_write(tmp_path / "data")
    live = tmp_path / "data" / f".report.json.p{os.getpid()}.abcd1234.tmp"  # a write in progress
    live.write_text("{")
    removed = remove_stale_temporaries(tmp_path / "data")
    assert len(removed) == 2 and sorted(p.name for p in (tmp_path / "data").iterdir()) == [live.name]


def test_the_run_hook_cleans_data_and_models(tmp_path, monkeypatch):
    from kedro.framework.session import KedroSession
    from kedro.framework.startup import bootstrap_project

    from bird_bone.pipelines.hooks import StaleTemporariesHook
    from tests.tiny_project import write_tiny_project

    project = write_tiny_project(tmp_path / "project")
    (project / "models").mkdir()
    stale = project / "models" / ".baseline.p999999999.abcdefgh.tmp"
    stale.mkdir()
    (stale / "model.safetensors").write_bytes(b"half")
    monkeypatch.chdir(project)
    bootstrap_project(project)
    with KedroSession.create(project_path=project) as session:
        hook = StaleTemporariesHook()
        hook.after_context_created(session.load_context())
        hook.before_pipeline_run()
    assert not stale.exists() and (project / "tiny" / "config.json").is_file()


def test_a_failed_write_in_this_process_still_cleans_up(tmp_path):
    with pytest.raises(RuntimeError), atomic_file(tmp_path / "x.json", "w") as handle:
        handle.write("{")
        raise RuntimeError
    assert list(tmp_path.iterdir()) == []


@pytest.fixture
def finished_wave(tmp_path, tiny_model, tiny_tokenizer):
    checkpoint = save_checkpoint(Checkpoint(tiny_model, tiny_tokenizer, {"stage": "wave_1"}), tmp_path / "wave_1")
    state, record = tmp_path / "wave_1_state.json", tmp_path / "wave_1.json"
    state.write_text(json.dumps({"wave": 1, "status": "accepted", "fingerprint": "f"}))
    record.write_text(json.dumps({"wave": 1, "status": "accepted"}))
    return WaveResumeDataset(str(state), str(record), str(checkpoint)), checkpoint


def test_an_intact_finished_wave_resumes(finished_wave):
    dataset, _ = finished_wave
    resumed = dataset.load()
    assert resumed["state"]["status"] == "accepted" and resumed["checkpoint"]().metadata["stage"] == "wave_1"


@pytest.mark.parametrize("damage", ["truncate", "header", "config"])
def test_a_damaged_checkpoint_of_a_finished_wave_is_computed_again(finished_wave, damage):
    dataset, checkpoint = finished_wave
    weights = checkpoint / "model.safetensors"
    if damage == "truncate":
        weights.write_bytes(weights.read_bytes()[:-1000])
    elif damage == "header":
        weights.write_bytes(weights.read_bytes()[:8] + b"#" * 20 + weights.read_bytes()[28:])
    else:
        (checkpoint / "config.json").write_text("{not json")
    assert str(checkpoint) in checkpoint_problem(checkpoint)
    assert dataset.load() is None  # the wave runs again instead of failing on its checkpoint


def test_a_checkpoint_that_fails_only_when_loaded_says_how_to_recover(finished_wave):
    dataset, checkpoint = finished_wave
    (checkpoint / "config.json").write_text(json.dumps({"model_type": "llama", "hidden_size": 7}))
    resumed = dataset.load()
    with pytest.raises(ArtifactError, match=r"delete .*wave_1_state.json and run the same command again"):
        resumed["checkpoint"]()
