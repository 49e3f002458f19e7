"""Streamed activation logging equals the in-memory statistics, one file per layer, and resumes."""

import json

import pytest
import torch

from bird_bone.calibration.activations import log_activations
from bird_bone.calibration.activations_streamed import load_statistics, stream_activations
from bird_bone.io.atomic import sha256_file
from tests.tiny_sources import random_windows, saved_tiny_llama


def _source(tmp_path, layers=3):
    return saved_tiny_llama(tmp_path, layers, seed=4)


def _windows():
    return random_windows(5, 2)


@pytest.mark.parametrize(("gram", "clusters"), [(True, 3), (False, 0)])
def test_streamed_statistics_equal_the_in_memory_ones(tmp_path, gram, clusters):
    model, source = _source(tmp_path)
    expected = log_activations(model, _windows(), 2, gram, clusters, pattern_tokens=24)
    summary = stream_activations(source, tmp_path / "stats", _windows(), 2, gram, clusters, pattern_tokens=24)
    found = load_statistics(tmp_path / "stats")
    assert set(found) == set(expected)
    assert any(k.endswith(".input_gram") for k in found) == gram
    assert any(k.endswith(".neuron_clusters") for k in found) == bool(clusters)
    for name, tensor in expected.items():
        assert torch.equal(found[name], tensor), name
    assert summary["tokens"] == 80 and len(summary["files"]) == 3
    assert not (tmp_path / "stats" / "model.safetensors.index.json").exists()  # no checkpoint written


def test_an_interrupted_run_resumes_to_the_same_files(tmp_path):
    _, source = _source(tmp_path, layers=4)

    def stop(index):
        if index == 2:
            raise KeyboardInterrupt

    stream_activations(source, tmp_path / "whole", _windows(), 2, True, 2, 24)
    with pytest.raises(KeyboardInterrupt):
        stream_activations(source, tmp_path / "cut", _windows(), 2, True, 2, 24, on_layer=stop)
    assert json.loads((tmp_path / "cut" / ".stream" / "progress.json").read_text())["done"] == 3
    stream_activations(source, tmp_path / "cut", _windows(), 2, True, 2, 24)

    def hashes(out):
        return {p.name: sha256_file(p) for p in out.glob("*.safetensors")}

    assert hashes(tmp_path / "cut") == hashes(tmp_path / "whole") and len(hashes(tmp_path / "whole")) == 4
