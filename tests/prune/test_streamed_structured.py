"""Streamed structured neuron pruning equals the in-memory wave, loads with the project's loader,
chains waves on a narrowed source, and resumes to the same files."""

import copy
import json

import gguf
import pytest
import torch

from bird_bone.export.gguf_stream import write_gguf_streamed
from bird_bone.io.atomic import sha256_file
from bird_bone.io.checkpoint import load_checkpoint
from bird_bone.models.adapters import mlp_widths
from bird_bone.prune.streamed_structured import stream_remove_neurons
from bird_bone.prune.structured import remove_neurons
from tests.conftest import make_tiny_llama
from tests.tiny_sources import random_windows, saved_tiny_llama, script_module

OPTIONS = {"max_fraction_per_cluster": 0.5, "clusters": 3, "pattern_tokens": 24, "batch_size": 2}


def _source(tmp_path, layers=3):
    return saved_tiny_llama(tmp_path, layers, seed=2)


def _windows():
    return random_windows(5, 1)


def _assert_same_model(out, reference):
    loaded = load_checkpoint(out)
    assert loaded.metadata["mlp_widths"] == mlp_widths(reference)
    state = loaded.model.state_dict()
    for name, tensor in reference.state_dict().items():
        assert torch.equal(state[name], tensor), name


def test_streamed_wave_equals_the_in_memory_wave(tmp_path):
    model, source = _source(tmp_path)
    reference = copy.deepcopy(model)
    expected = remove_neurons(reference, _windows(), 0.3, **OPTIONS)
    kept = stream_remove_neurons(source, tmp_path / "out", _windows(), 0.3, **OPTIONS)
    assert set(kept) == set(expected) == {f"model.layers.{i}.mlp" for i in range(3)}
    for name in expected:
        assert torch.equal(kept[name], expected[name]), name
    assert max(mlp_widths(reference)) < 64  # neurons were removed
    _assert_same_model(tmp_path / "out", reference)
    metadata = json.loads((tmp_path / "out" / "bird_bone.json").read_text())
    assert metadata["stage"] == "prune" and metadata["prune"]["fraction"] == 0.3
    assert json.loads((tmp_path / "out" / "config.json").read_text())["intermediate_size"] == 64


def test_a_second_wave_streams_from_the_narrowed_checkpoint(tmp_path):
    model, source = _source(tmp_path, layers=2)
    reference = copy.deepcopy(model)
    first = remove_neurons(reference, _windows(), 0.25, **OPTIONS)
    second = remove_neurons(reference, _windows(), 0.5, kept=first, **OPTIONS)
    kept = stream_remove_neurons(source, tmp_path / "wave1", _windows(), 0.25, **OPTIONS)
    kept = stream_remove_neurons(tmp_path / "wave1", tmp_path / "wave2", _windows(), 0.5, kept=kept, **OPTIONS)
    assert all(torch.equal(kept[name], second[name]) for name in second)
    assert all(kept[name].max() < 64 for name in kept)
    _assert_same_model(tmp_path / "wave2", reference)


def _hashes(out):
    files = [*out.glob("*.safetensors"), *(out / "kept").glob("*.safetensors"), out / "bird_bone.json"]
    return {str(p.relative_to(out)): sha256_file(p) for p in files}


def test_an_interrupted_wave_resumes_to_the_same_files(tmp_path):
    _, source = _source(tmp_path, layers=4)

    def stop(index):
        if index == 1:
            raise KeyboardInterrupt  # as if killed once layer 1 is written

    stream_remove_neurons(source, tmp_path / "whole", _windows(), 0.3, **OPTIONS)
    with pytest.raises(KeyboardInterrupt):
        stream_remove_neurons(source, tmp_path / "cut", _windows(), 0.3, on_layer=stop, **OPTIONS)
    assert json.loads((tmp_path / "cut" / ".stream" / "progress.json").read_text())["done"] == 2
    assert not (tmp_path / "cut" / "model.safetensors.index.json").exists()
    stream_remove_neurons(source, tmp_path / "cut", _windows(), 0.3, **OPTIONS)
    assert _hashes(tmp_path / "cut") == _hashes(tmp_path / "whole")
    assert len(_hashes(tmp_path / "whole")) == 5 + 4 + 1


def test_a_bad_fraction_fails_before_any_work(tmp_path):
    _, source = _source(tmp_path, layers=2)
    with pytest.raises(ValueError, match=r"fraction of neurons must be in \[0, 1\), got 1.0"):
        stream_remove_neurons(source, tmp_path / "out", _windows(), 1.0)
    assert not (tmp_path / "out").exists()


def test_the_script_streams_structured_and_names_bad_arguments(tmp_path, tiny_tokenizer, capsys):
    model = make_tiny_llama(len(tiny_tokenizer), layers=2)
    model.save_pretrained(tmp_path / "source")
    tiny_tokenizer.save_pretrained(tmp_path / "source")
    text = tmp_path / "text.txt"
    text.write_text("The cat sat on the mat. The dog sat on the log. " * 40)
    script, common = script_module("stream_prune"), ["--source", str(tmp_path / "source"), "--calibration", str(text)]
    common += ["--windows", "4", "--window-length", "16", "--clusters", "2", "--max-fraction-per-cluster", "0.5"]
    args = [*common, "--out", str(tmp_path / "out"), "--method", "structured", "--sparsity", "0.25"]
    assert script.main(args) == 0
    assert json.loads(capsys.readouterr().out)["mlp_widths"] == [48, 48]
    assert load_checkpoint(tmp_path / "out").metadata["mlp_widths"] == [48, 48]
    write_gguf_streamed(tmp_path / "out", tmp_path / "narrow.gguf", "F32")  # the streamed export reads the widths
    shapes = {t.name: sorted(int(n) for n in t.shape) for t in gguf.GGUFReader(tmp_path / "narrow.gguf").tensors}
    assert shapes["blk.1.ffn_down.weight"] == shapes["blk.1.ffn_up.weight"] == [32, 48]
    assert script.main([*args, "--pattern", "2:4"]) == 1
    assert "--pattern: structured pruning removes neurons" in capsys.readouterr().err
    bad = [*common, "--out", str(tmp_path / "q"), "--stage", "novaq", "--novaq", "codebook_size=1"]
    assert script.main(bad) == 1
    assert "novaq.codebook_size must be >= 2 (got 1)" in capsys.readouterr().err
    assert script.main([*common[:2], "--out", str(tmp_path / "s"), "--stage", "activations"]) == 1
    assert "--calibration: activation logging needs a calibration text file" in capsys.readouterr().err
