"""Healing under ``accelerate launch``: two CPU processes (gloo) follow the single-process curve and
keep every pruned weight exactly zero; the sharding of a global batch over processes is exact."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from safetensors.torch import load_file

from bird_bone.heal.distributed import DistributedHealError, module_name, shard
from bird_bone.heal.launch import main
from bird_bone.io.checkpoint import Checkpoint, save_checkpoint
from bird_bone.io.tensors import save_tensors
from bird_bone.prune.layerwise import prune_layers
from tests.conftest import make_tiny_llama

SRC = Path(__file__).resolve().parents[2] / "src"
STEPS = 8
# float32 gradients all-reduced over 2 processes differ from the single-process sum only in the
# order of additions (relative ~1e-7 per step); Adam's normalised updates carry that over 8 steps to
# about 1e-7 of the loss (measured). 1e-4 stays far below the ~0.15 the loss falls over the run, and below
# the gap a wrong shard (a different batch or a double-counted one) would open.
TOLERANCE = 1e-4


def test_shards_of_all_processes_partition_the_global_batch():
    batch = torch.arange(12).reshape(6, 2)
    parts = [shard(batch, SimpleNamespace(num_processes=3, process_index=i)) for i in range(3)]
    assert sorted(torch.cat(parts)[:, 0].tolist()) == batch[:, 0].tolist()
    assert parts[1][:, 0].tolist() == [2, 8]  # rows 1 and 4
    with pytest.raises(DistributedHealError, match="batch_size 6 is not a multiple of the 4"):
        shard(batch, SimpleNamespace(num_processes=4, process_index=0))


def test_wrapped_module_names_map_back_to_the_bare_model():
    name = "module.base_model.model._fsdp_wrapped_module.model.layers.0._fsdp_wrapped_module.self_attn.q_proj"
    assert module_name(name) == "model.layers.0.self_attn.q_proj"
    assert module_name("base_model.model.model.layers.1.mlp.up_proj") == "model.layers.1.mlp.up_proj"


def _pruned_checkpoint(root: Path) -> tuple[Path, Path]:
    model = make_tiny_llama(64)
    masks = prune_layers(model, "magnitude", 0.5)
    checkpoint = save_checkpoint(Checkpoint(model, None, {"stage": "pruned"}, masks), root / "pruned")
    g = torch.Generator().manual_seed(1)
    windows = torch.randint(3, 8, (1, 8), generator=g).repeat(8, 4)  # [8, 32], learnable in a few steps
    save_tensors({"windows": windows}, root / "windows.safetensors")
    return checkpoint, root / "windows.safetensors"


def _options(checkpoint: Path, windows: Path, out: Path) -> list[str]:
    settings = ["base=full", "batch_size=4", "window_length=16", "learning_rate=0.01", "kd_weight=0", "lm_weight=1"]
    options = ["--checkpoint", str(checkpoint), "--windows", str(windows), "--out", str(out), "--steps", str(STEPS)]
    return options + [item for s in settings for item in ("--set", s)]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _launch_two_cpu_processes(options: list[str]) -> None:
    # `--cpu --num_processes 2` would start one process (accelerate 1.15, no mpirun): `--multi_gpu`
    # goes through torchrun, and with CUDA hidden the two processes join over gloo on the CPU.
    command = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2"]
    command += ["--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"]
    command += ["--main_process_port", str(_free_port()), "-m", "bird_bone.heal.launch", *options]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")])}
    env.update(OMP_NUM_THREADS="1", CUDA_VISIBLE_DEVICES="")
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]


def _healed(out: Path) -> tuple[dict, dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    weights = load_file(out / "model.safetensors")
    return json.loads((out / "bird_bone.json").read_text()), weights, load_file(out / "masks.safetensors")


def test_two_cpu_processes_follow_the_single_process_curve_and_keep_zeros(tmp_path):
    checkpoint, windows = _pruned_checkpoint(tmp_path)
    assert main(_options(checkpoint, windows, tmp_path / "single")) == 0
    _launch_two_cpu_processes(_options(checkpoint, windows, tmp_path / "double"))
    single, single_weights, masks = _healed(tmp_path / "single")
    double, double_weights, _ = _healed(tmp_path / "double")
    assert double["processes"] == 2 and single["processes"] == 1
    curve, launched = single["heal"]["loss"], double["heal"]["loss"]
    assert len(curve) == len(launched) == STEPS and curve[-1] < 0.98 * curve[0]  # it did learn (3.89 -> 3.74)
    assert launched == pytest.approx(curve, rel=TOLERANCE)
    assert double["heal"]["merged_modules"] == 14
    for name, mask in masks.items():
        weight = double_weights[f"{name}.weight"]
        assert int((weight[mask] != 0).sum()) == 0, name  # exactly zero after the merge
        torch.testing.assert_close(weight, single_weights[f"{name}.weight"], rtol=1e-4, atol=1e-5)
