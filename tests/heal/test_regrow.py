"""RigL regrowth: re-opens the pruned positions with the largest gradient, at zero."""

from __future__ import annotations

import pytest
import torch

from bird_bone.heal.regrow import regrow, regrow_masks
from bird_bone.prune.layerwise import prune_layers
from tests.conftest import make_tiny_llama


def test_regrow_masks_picks_the_largest_gradients_among_pruned_positions():
    mask = torch.tensor([[True, True, False, True], [True, False, True, True]])
    grad = torch.tensor([[0.1, 5.0, 9.0, 0.2], [3.0, 99.0, 0.3, 0.4]])
    new, counts = regrow_masks({"w": mask}, {"w": grad}, 0.34)  # 6 pruned -> 2 re-opened
    assert counts == {"w": 2}
    assert new["w"].tolist() == [[True, False, False, True], [False, False, True, True]]  # 5.0 and 3.0, not 9 / 99
    assert mask.sum() == 6  # the input is not changed


def test_regrow_masks_rejects_fraction_out_of_range():
    with pytest.raises(ValueError, match="max_fraction"):
        regrow_masks({}, {}, 1.5)


def test_regrow_on_a_model_reopens_at_zero_and_keeps_requires_grad():
    model = make_tiny_llama(64)
    masks = prune_layers(model, "magnitude", 0.5)
    data = torch.randint(3, 64, (4, 16))
    flags = {n: p.requires_grad for n, p in model.named_parameters()}
    new, counts = regrow(model, data, masks, 0.05)
    for name, mask in masks.items():
        reopened = mask & ~new[name]
        assert int(reopened.sum()) == counts[name] == int(0.05 * int(mask.sum()))
        assert (model.get_submodule(name).weight[reopened] == 0).all()  # zero init, as in RigL
    assert flags == {n: p.requires_grad for n, p in model.named_parameters()}
