"""The pruning pipeline through Kedro on a tiny model: every method's artifacts, exact sparsity,
masks that hold in the saved checkpoint, and bad input refused before any work."""

from __future__ import annotations

import json

import pytest

from bird_bone.io.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from bird_bone.io.tensors import load_tensors
from bird_bone.prune.masks import is_nm_sparse
from tests.conftest import TINY_TEXT
from tests.pipelines.conftest import run_session


def tiny_params(project, **prune):
    return {
        "model": {"source": str(project / "tiny")},
        "data": {
            "evaluation": {"source": str(project / "text.txt"), "fallback": None},
            "calibration": {
                "source": str(project / "text.txt"),
                "fallback": None,
                "windows": 4,
                "window_length": 16,
                "batch_size": 2,
            },
        },
        "eval": {"windows": 2, "window_length": 16, "tasks": []},
        "prune": {
            "structured": {"clusters": 2, "pattern_tokens": 16, "fraction": 0.25, "max_fraction_per_cluster": 0.5},
            **prune,
        },
    }


@pytest.fixture
def tiny_project(project, tiny_model, tiny_tokenizer):
    save_checkpoint(Checkpoint(tiny_model, tiny_tokenizer), project / "tiny")
    (project / "text.txt").write_text(TINY_TEXT)
    return project


@pytest.mark.parametrize(
    ("method", "pattern"), [("wanda", "unstructured"), ("sparsegpt", "2:4"), ("magnitude", "unstructured")]
)
def test_prune_pipeline_writes_masks_that_hold_in_the_checkpoint(tiny_project, method, pattern):
    run_session(
        tiny_project,
        tiny_params(tiny_project, method=method, pattern=pattern, target_sparsity=0.6, waves=2),
        pipeline=["seeding", "prune"],
    )
    waves = json.loads((tiny_project / "data/08_reporting/prune_waves.json").read_text())
    assert [w["wave"] for w in waves] == [1, 2]
    wave1 = load_tensors(tiny_project / "data/06_models/oneshot_masks/wave_1.safetensors")
    wave2 = load_tensors(tiny_project / "data/06_models/oneshot_masks/wave_2.safetensors")
    assert len(wave2) == 14  # 7 linears x 2 layers; embeddings and head stay dense
    model = load_checkpoint(tiny_project / "models/pruned").model
    for name, mask in wave2.items():
        weight = model.get_submodule(name).weight
        assert (weight[mask] == 0).all(), name  # the saved model honours the masks exactly
        assert (mask | ~wave1[name]).all(), name  # a weight pruned in wave 1 stays pruned
        if pattern == "2:4":
            assert is_nm_sparse(mask, 2, 4)
    if pattern == "unstructured":
        assert waves[0]["sparsity"] == pytest.approx(0.3, abs=0.02) and waves[1]["sparsity"] == pytest.approx(
            0.6, abs=0.02
        )
    report = (tiny_project / "data/08_reporting/prune_report.md").read_text()
    assert f"{method} ({pattern})" in report
    assert (tiny_project / "data/08_reporting/activation_heatmap.png").stat().st_size > 1000
    stats = load_tensors(tiny_project / "data/03_primary/activation_statistics.safetensors")
    assert stats["model.layers.1.mlp.neuron_values"].shape == (64,)
    assert not any(k.endswith("neuron_clusters") for k in stats)  # k-means only for the cluster-aware method


def test_structured_pruning_through_kedro(tiny_project):
    run_session(tiny_project, tiny_params(tiny_project, method="structured", waves=2), pipeline=["seeding", "prune"])
    waves = json.loads((tiny_project / "data/08_reporting/prune_waves.json").read_text())
    assert waves[-1]["mlp_widths"] == [32, 32] and waves[-1]["neurons_removed"] == pytest.approx(0.5)
    assert load_checkpoint(tiny_project / "models/pruned").metadata["mlp_widths"] == [32, 32]
    stats = load_tensors(tiny_project / "data/03_primary/activation_statistics.safetensors")
    clusters = stats["model.layers.1.mlp.neuron_clusters"]
    assert clusters.shape == (64,) and set(clusters.tolist()) == {0, 1}  # structured.clusters: 2
    kept = load_tensors(tiny_project / "data/06_models/oneshot_masks/wave_2.safetensors")
    assert {k: len(v) for k, v in kept.items()} == {f"model.layers.{i}.mlp.kept_neurons": 32 for i in (0, 1)}


@pytest.mark.parametrize(
    ("prune", "message"),
    [
        ({"target_sparsity": 1.5}, "prune.target_sparsity must be < 1"),
        ({"pattern": "2:5"}, "N:M pattern 2:5 does not divide"),
    ],
)
def test_bad_pruning_input_is_refused_before_pruning(tiny_project, prune, message):
    with pytest.raises(Exception, match=message):
        run_session(tiny_project, tiny_params(tiny_project, **prune), pipeline=["seeding", "prune"])
    assert not (tiny_project / "models/pruned").exists()


def test_calibration_text_shorter_than_the_windows(tiny_project):
    params = tiny_params(tiny_project)
    params["data"]["calibration"]["windows"] = 10_000
    with pytest.raises(Exception, match="too short for 10000 calibration windows of 16"):
        run_session(tiny_project, params, pipeline=["seeding", "prune"])
