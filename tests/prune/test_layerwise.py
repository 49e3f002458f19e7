"""A whole layer-wise pruning pass on a tiny model, in the reference order and in true-sequential order."""

import pytest
import torch

from bird_bone.models.adapters import prunable_linears
from bird_bone.prune.layerwise import prune_layers
from bird_bone.prune.masks import is_nm_sparse


@pytest.mark.parametrize("true_sequential", [False, True])
@pytest.mark.parametrize(("method", "n", "m"), [("wanda", 0, 0), ("sparsegpt", 0, 0), ("sparsegpt", 2, 4)])
def test_wave_masks_are_exact_and_applied(tiny_model, method, n, m, true_sequential):
    windows = torch.randint(0, tiny_model.config.vocab_size, (4, 16))
    masks = prune_layers(tiny_model, method, 0.5, windows, n, m, batch_size=3, true_sequential=true_sequential)
    linears = prunable_linears(tiny_model)
    assert set(masks) == set(linears)
    for name, module in linears.items():
        mask = masks[name]
        assert (module.weight[mask] == 0).all(), name
        if n:
            assert is_nm_sparse(mask, n, m), name
        elif method == "wanda":
            assert (mask.sum(1) == module.in_features // 2).all(), name  # per output row
        else:
            assert int(mask.sum()) == mask.numel() // 2, name


def test_true_sequential_changes_only_the_calibration_order(tiny_model):
    import copy

    windows = torch.randint(0, tiny_model.config.vocab_size, (4, 16))
    other = copy.deepcopy(tiny_model)
    reference = prune_layers(tiny_model, "wanda", 0.5, windows)
    sequential = prune_layers(other, "wanda", 0.5, windows, true_sequential=True)
    first = "model.layers.0.self_attn.q_proj"  # sees the same inputs either way
    assert torch.equal(reference[first], sequential[first])
    assert any(not torch.equal(reference[k], sequential[k]) for k in reference)


@pytest.mark.parametrize(
    ("method", "n", "m", "expected"),
    [("wanda", 2, 4, False), ("wanda", 0, 0, True), ("sparsegpt", 2, 4, True), ("sparsegpt", 0, 0, True)],
)
def test_auto_order_is_reference_for_wanda_nm_only(tiny_model, method, n, m, expected):
    import copy

    from bird_bone.prune.layerwise import auto_true_sequential

    assert auto_true_sequential(method, n, m) is expected
    windows = torch.randint(0, tiny_model.config.vocab_size, (4, 16))
    other = copy.deepcopy(tiny_model)
    opposite = copy.deepcopy(tiny_model)
    auto = prune_layers(tiny_model, method, 0.5, windows, n, m, true_sequential="auto")
    chosen = prune_layers(other, method, 0.5, windows, n, m, true_sequential=expected)
    assert all(torch.equal(auto[k], chosen[k]) for k in auto)
    unchosen = prune_layers(opposite, method, 0.5, windows, n, m, true_sequential=not expected)
    assert any(not torch.equal(auto[k], unchosen[k]) for k in auto)  # the two orders differ here
    with pytest.raises(ValueError, match="true_sequential must be true, false or 'auto'"):
        prune_layers(other, method, 0.5, windows, n, m, true_sequential="sometimes")
