"""Every pruning method runs where the model is: CPU here, and CUDA too where a GPU is visible
(``pytest -k cuda``, see benchmarks/cuda_check.py). Masks live on the weights' device and a method
gives the same masks on either device, up to float ties."""

from __future__ import annotations

import pytest
import torch

from bird_bone.models.adapters import mlp_widths
from bird_bone.prune.layerwise import prune_layers
from bird_bone.prune.masks import _force, _keep
from bird_bone.prune.structured import remove_neurons
from tests.conftest import make_tiny_llama

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def _windows(vocab: int = 64) -> torch.Tensor:
    return torch.randint(3, vocab, (4, 32), generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("true_sequential", [False, True])
@pytest.mark.parametrize(("method", "n", "m"), [("wanda", 0, 0), ("sparsegpt", 0, 0), ("sparsegpt", 2, 4)])
def test_layerwise_pruning_runs_on_the_models_device(device, method, n, m, true_sequential):
    model = make_tiny_llama(64).to(device)
    first = prune_layers(model, method, 0.5, _windows(), n=n, m=m, true_sequential=true_sequential)
    assert len(first) == 14
    for name, mask in first.items():
        weight = model.get_submodule(name).weight
        assert mask.device == weight.device, name
        assert int((weight[mask] != 0).sum()) == 0 and abs(mask.float().mean().item() - 0.5) < 0.01, name
    priors = {k: v.cpu() for k, v in first.items()}  # as loaded from a checkpoint: on the host
    sparsity = 0.6 if not n else 0.5
    second = prune_layers(
        model, method, sparsity, _windows(), n=n, m=m, prior_masks=priors, true_sequential=true_sequential
    )
    assert all(bool((second[k] | ~first[k].to(second[k].device)).all()) for k in first)  # pruned stays pruned


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_wanda_masks_on_cuda_match_the_cpu_ones():
    on_cpu = prune_layers(make_tiny_llama(64), "wanda", 0.5, _windows())
    on_gpu = prune_layers(make_tiny_llama(64).to("cuda"), "wanda", 0.5, _windows())
    agree = [float((on_cpu[k] == on_gpu[k].cpu()).float().mean()) for k in on_cpu]
    assert min(agree) > 0.99  # float sums in another order may swap a tie at the threshold


@pytest.mark.parametrize("device", DEVICES)
def test_structured_pruning_runs_on_the_models_device(device):
    model = make_tiny_llama(64).to(device)
    kept = remove_neurons(model, _windows(), fraction=0.25, max_fraction_per_cluster=0.5, clusters=2)
    assert mlp_widths(model) == [48, 48] and all(k.shape == (48,) for k in kept.values())
    assert {p.device.type for p in model.parameters()} == {device}


def test_a_host_prior_joins_scores_and_masks_on_another_device():
    # meta: a mix of devices fails on a CPU too, as host and CUDA tensors would
    host = torch.ones(2, 4, dtype=torch.bool)
    assert _keep(torch.zeros(2, 4, dtype=torch.bool, device="meta"), host, ~host).device.type == "meta"
    assert _force(torch.zeros(2, 4, device="meta"), host, ~host).device.type == "meta"
