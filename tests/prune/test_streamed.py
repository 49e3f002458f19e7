"""Streamed layer-wise pruning equals the in-memory pass, writes a loadable checkpoint, and resumes."""

import copy
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

from bird_bone.errors import ArtifactError
from bird_bone.io.atomic import sha256_file
from bird_bone.io.tensors import load_tensors
from bird_bone.models.adapters import prunable_linears
from bird_bone.prune.layerwise import prune_layers
from bird_bone.prune.streamed import stream_prune
from tests.conftest import make_tiny_llama

ROOT = Path(__file__).resolve().parents[2]


def _saved_tiny(tmp_path, layers=3, dtype=torch.float32, shard="1MB"):
    model = make_tiny_llama(300, layers=layers).to(dtype)
    source = tmp_path / "source"
    model.save_pretrained(source, max_shard_size=shard)
    return model, source


def _masks(out: Path) -> dict[str, torch.Tensor]:
    masks = {}
    for path in sorted((out / "masks").glob("*.safetensors")):
        masks.update(load_tensors(path))
    return masks


@pytest.mark.parametrize("true_sequential", [False, True])
@pytest.mark.parametrize(
    ("method", "n", "m"), [("wanda", 0, 0), ("sparsegpt", 0, 0), ("wanda", 2, 4), ("magnitude", 0, 0)]
)
def test_streamed_equals_in_memory(tmp_path, method, n, m, true_sequential):
    model, source = _saved_tiny(tmp_path, shard="20KB")  # several source shards, layers split across them
    windows = torch.randint(0, 300, (5, 16), generator=torch.Generator().manual_seed(1))
    reference = copy.deepcopy(model)
    expected = prune_layers(reference, method, 0.5, windows, n, m, batch_size=2, true_sequential=true_sequential)
    out = tmp_path / "out"
    summary = stream_prune(source, out, method, 0.5, windows, n, m, batch_size=2, true_sequential=true_sequential)
    masks = _masks(out)
    assert set(masks) == set(expected)
    for name in expected:
        assert torch.equal(masks[name], expected[name]), name
    loaded = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32)
    state, wanted = loaded.state_dict(), reference.state_dict()
    for name in wanted:
        torch.testing.assert_close(state[name], wanted[name], rtol=0, atol=1e-6, msg=name)
    assert summary["sparsity"] == pytest.approx(0.5, abs=0.01)
    assert set(summary["layers"]) == set(prunable_linears(reference))


def test_output_keeps_the_source_dtype_and_is_a_sharded_checkpoint(tmp_path):
    _, source = _saved_tiny(tmp_path, dtype=torch.bfloat16)
    out = tmp_path / "out"
    stream_prune(source, out, "wanda", 0.5, torch.randint(0, 300, (2, 8)))
    index = json.loads((out / "model.safetensors.index.json").read_text())
    shards = sorted(set(index["weight_map"].values()))
    assert shards == [f"model-0000{i}-of-00004.safetensors" for i in range(1, 5)]
    assert set(load_file(out / shards[1])) == {k for k in index["weight_map"] if k.startswith("model.layers.1.")}
    assert all(t.dtype == torch.bfloat16 for t in load_file(out / shards[0]).values())
    assert (out / "config.json").is_file()
    weight = load_file(out / shards[0])["model.layers.0.mlp.down_proj.weight"]
    assert (weight == 0).float().mean() == 0.5


def test_other_settings_on_a_started_output_fail_with_the_file(tmp_path):
    _, source = _saved_tiny(tmp_path)
    out = tmp_path / "out"
    windows = torch.randint(0, 300, (2, 8))
    stream_prune(source, out, "wanda", 0.5, windows)
    with pytest.raises(ArtifactError, match=r"progress.json.*sparsity"):
        stream_prune(source, out, "wanda", 0.6, windows)


_CHILD = """
import os, signal, sys, torch
from bird_bone.prune.streamed import stream_prune
source, out, kill_after = sys.argv[1], sys.argv[2], int(sys.argv[3])
torch.set_num_threads(1)
windows = torch.randint(0, 300, (4, 16), generator=torch.Generator().manual_seed(3))
def on_layer(index):
    if index == kill_after:
        os.kill(os.getpid(), signal.SIGKILL)
stream_prune(source, out, "sparsegpt", 0.5, windows, true_sequential=True, on_layer=on_layer)
"""


def _child(source, out, kill_after=-1) -> int:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    return subprocess.run([sys.executable, "-c", _CHILD, str(source), str(out), str(kill_after)], env=env).returncode


def _hashes(out: Path) -> dict[str, str]:
    files = [*out.glob("*.safetensors"), *(out / "masks").glob("*.safetensors"), out / "model.safetensors.index.json"]
    return {str(p.relative_to(out)): sha256_file(p) for p in files}


def test_a_run_killed_mid_model_resumes_to_the_same_files(tmp_path):
    _, source = _saved_tiny(tmp_path, layers=4)
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    assert _child(source, whole) == 0
    assert _child(source, killed, kill_after=1) == -9  # SIGKILL once layer 1 is written
    progress = json.loads((killed / ".stream" / "progress.json").read_text())
    assert progress["done"] == 2 and not progress["complete"]
    assert not (killed / "model.safetensors.index.json").exists()
    assert _child(source, killed) == 0
    assert _hashes(killed) == _hashes(whole)
    assert len(_hashes(whole)) == 5 + 4 + 1


@pytest.mark.slow
def test_streamed_smollm2_masks_equal_the_in_memory_pass(tmp_path, smollm2, wikitext_test_tokens):
    from bird_bone.data.windows import calibration_windows

    model = copy.deepcopy(smollm2.model)
    source = tmp_path / "smollm2"
    model.save_pretrained(source)
    windows = calibration_windows(wikitext_test_tokens, 128, 4, seed=0)
    expected = prune_layers(model, "wanda", 0.5, windows, true_sequential=True)
    stream_prune(source, tmp_path / "out", "wanda", 0.5, windows, true_sequential=True)
    masks = _masks(tmp_path / "out")
    assert set(masks) == set(expected)
    assert all(torch.equal(masks[name], expected[name]) for name in expected)
