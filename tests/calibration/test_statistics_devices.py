"""Calibration statistics live on the device of the layer they describe (so pruning a model on a GPU
never mixes host and device tensors); checked with meta tensors, which fail on a mix on a CPU too."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from bird_bone.calibration.statistics import collect_input_statistics
from bird_bone.prune.structured import cluster_neurons

DEVICES = ["cpu", "meta"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.mark.parametrize("device", DEVICES)
def test_statistics_are_kept_on_the_weights_device(device):
    layer = nn.Linear(8, 4, device=device)
    with collect_input_statistics({"layer": layer}, gram=True, pattern_tokens={"layer": 3}) as stats:
        layer(torch.randn(2, 5, 8, device=device))
    s = stats["layer"]
    assert s.tokens == 10
    for tensor in (s.sq_norms, s.abs_sum, s.xtx, s.hessian, s.patterns()):
        assert tensor.device == layer.weight.device
    assert s.patterns().shape == (8, 3)


@pytest.mark.parametrize("device", ["cpu"] + (["cuda"] if torch.cuda.is_available() else []))
def test_neuron_clusters_come_back_on_the_host_from_any_device(device):
    one, other = torch.tensor([1.0, 0, 1, 0, 1, 0]), torch.tensor([0.0, 1, 0, 1, 0, 1])  # two activation patterns
    noise = 0.01 * torch.randn(6, 6, generator=torch.Generator().manual_seed(0))
    patterns = torch.stack([one] * 3 + [other] * 3) + noise
    ids = cluster_neurons(patterns.to(device), clusters=2)
    assert ids.device.type == "cpu" and len(set(ids[:3].tolist())) == 1 and ids[0] != ids[3]
