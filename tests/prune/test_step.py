"""The one pruning entry point and the registry behind it, on a tiny random model."""

from __future__ import annotations

import copy
import typing

import pytest
import torch

from bird_bone.calibration.activations import log_activations
from bird_bone.config import PruneParams
from bird_bone.models.adapters import mlp_widths, prunable_linears
from bird_bone.prune.layerwise import mask_sparsity, prune_layers
from bird_bone.prune.registry import PRUNERS, pruner
from bird_bone.prune.step import neurons_removed, prune_step


def windows(model) -> torch.Tensor:
    return torch.randint(0, model.config.vocab_size, (4, 16), generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("method", ["magnitude", "wanda", "sparsegpt"])
def test_mask_steps_are_cumulative_and_match_the_layerwise_pass(tiny_model, method):
    other, data = copy.deepcopy(tiny_model), windows(tiny_model)
    options = PruneParams(method=method).options()
    first = prune_step(tiny_model, method, 0.25, data, **options)
    second = prune_step(tiny_model, method, 0.5, data, first.masks, **options)
    assert mask_sparsity(first.masks) == pytest.approx(0.25, abs=0.01)
    assert mask_sparsity(second.masks) == pytest.approx(0.5, abs=0.01)
    assert all((second.masks[k] | ~first.masks[k]).all() for k in first.masks)  # earlier masks stay pruned
    assert second.kept == {}
    direct = prune_layers(other, method, 0.25, data, **options)
    assert all(torch.equal(direct[k], first.masks[k]) for k in direct)


def test_structured_step_removes_neurons_and_keeps_the_masks_it_was_given(tiny_model):
    structured = {"clusters": 2, "pattern_tokens": 16, "fraction": 0.25, "max_fraction_per_cluster": 0.5,
                  "width_multiple": 1}  # fmt: skip
    params = PruneParams(method="structured", structured=structured)
    given = {"x": torch.ones(2, 2, dtype=torch.bool)}
    step = prune_step(tiny_model, "structured", params.amount(1), windows(tiny_model), given, **params.options())
    assert mlp_widths(tiny_model) == [48, 48] and set(step.masks) == {"x"}
    assert sorted(step.kept) == ["model.layers.0.mlp", "model.layers.1.mlp"]
    assert all(len(index) == 48 and index.unique().numel() == 48 for index in step.kept.values())
    assert neurons_removed(tiny_model) == {"mlp_widths": [48, 48], "neurons_removed": 0.25}
    again = prune_step(tiny_model, "structured", params.amount(2), windows(tiny_model), kept=step.kept,
                       **params.options())  # fmt: skip
    assert mlp_widths(tiny_model) == [32, 32]
    assert all(set(again.kept[k].tolist()) < set(step.kept[k].tolist()) for k in step.kept)  # original indices


def test_registry_entries_name_one_score_or_solver_and_known_statistics(tiny_model):
    for name, entry in PRUNERS.items():
        assert sum(f is not None for f in (entry.score, entry.solve, entry.remove)) == 1, name
        assert entry.statistics <= {"sq_norms", "gram", "clusters"}, name
    assert PRUNERS["magnitude"].statistics == frozenset()  # needs no calibration data
    assert set(typing.get_args(PruneParams.model_fields["method"].annotation)) == set(PRUNERS)
    with pytest.raises(ValueError, match="unknown pruning method 'lasso' \\(choose from magnitude, wanda"):
        pruner("lasso")
    with pytest.raises(ValueError, match="removes neurons"):
        prune_layers(tiny_model, "structured", 0.5)


def test_activation_pass_clusters_neurons_only_when_asked(tiny_model):
    data = windows(tiny_model)
    plain = log_activations(tiny_model, data, 2, clusters=0)
    clustered = log_activations(tiny_model, data, 2, clusters=2, pattern_tokens=16)
    assert not any(k.endswith("neuron_clusters") for k in plain)
    assert set(clustered) - set(plain) == {f"model.layers.{i}.mlp.neuron_clusters" for i in (0, 1)}
    assert all(torch.equal(plain[k], clustered[k]) for k in plain)  # the rest is the same pass
    assert set(prunable_linears(tiny_model)) == {k.rsplit(".", 1)[0] for k in plain if k.endswith("input_sq_norms")}
