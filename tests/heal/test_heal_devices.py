"""A few heal steps where the model is: CPU here, CUDA too where a GPU is visible. Pruned weights
stay exactly zero and the healed model stays on its device."""

from __future__ import annotations

import pytest
import torch

from bird_bone.heal.qlora import micro_heal
from bird_bone.heal.regrow import regrow
from bird_bone.prune.layerwise import prune_layers
from tests.conftest import make_tiny_llama

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.mark.parametrize("device", DEVICES)
def test_heal_runs_on_the_models_device_and_keeps_zeros(device):
    model = make_tiny_llama(64).to(device)
    teacher = make_tiny_llama(64).to(device)
    windows = torch.randint(3, 64, (4, 32), generator=torch.Generator().manual_seed(0))
    masks = prune_layers(model, "wanda", 0.5, windows)
    result = micro_heal(
        model, windows, masks, 3, base="full", window_length=16, teacher=teacher, kd_weight=1.0, progress=False
    )
    assert len(result.loss) == 3 and all(k > 0 for k in result.kd) and result.merged_modules == 14
    for name, mask in masks.items():
        weight = model.get_submodule(name).weight
        assert weight.device.type == device and int((weight[mask] != 0).sum()) == 0, name


@pytest.mark.parametrize("device", DEVICES)
def test_regrowth_runs_on_the_models_device_with_host_masks(device):
    model = make_tiny_llama(64).to(device)
    windows = torch.randint(3, 64, (4, 32), generator=torch.Generator().manual_seed(0))
    masks = {k: v.cpu() for k, v in prune_layers(model, "magnitude", 0.5).items()}  # as loaded from disk
    new, per_layer = regrow(model, windows, masks, 0.1, 2)
    assert sum(per_layer.values()) > 0
    assert all(bool((masks[k] | ~new[k].to(masks[k].device)).all()) for k in masks)  # only re-opens
