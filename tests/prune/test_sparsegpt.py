"""Layer-wise reconstruction error on the same inputs: SparseGPT <= Wanda <= magnitude."""

import pytest
import torch

from bird_bone.prune.magnitude import magnitude_scores
from bird_bone.prune.masks import apply_mask, is_nm_sparse, select_mask
from bird_bone.prune.sparsegpt import sparsegpt_prune
from bird_bone.prune.wanda import wanda_scores


def correlated_inputs(tokens=2048, columns=64, seed=0):
    """Inputs with uneven channel scales and correlations, like LLM activations."""
    g = torch.Generator().manual_seed(seed)
    scales = torch.logspace(-1, 1, columns)[torch.randperm(columns, generator=g)]
    mixing = torch.eye(columns) + 0.3 * torch.randn(columns, columns, generator=g) / columns**0.5
    return (torch.randn(tokens, columns, generator=g) * scales) @ mixing


def reconstruction_error(weight, pruned, x):
    return (x @ weight.T - x @ pruned.T).square().sum().item()


@pytest.mark.parametrize(("sparsity", "n", "m"), [(0.5, 0, 0), (0.0, 2, 4), (0.7, 0, 0)])
def test_error_ordering_sparsegpt_wanda_magnitude(sparsity, n, m):
    torch.manual_seed(1)
    x = correlated_inputs()
    weight = torch.randn(32, 64)
    hessian = 2 * x.T @ x / x.shape[0]
    sgpt, sgpt_mask = sparsegpt_prune(weight, hessian, sparsity, n, m, blocksize=16)
    wanda_mask = select_mask(wanda_scores(weight, x.square().sum(0)), sparsity, n, m, "row")
    mag_mask = select_mask(magnitude_scores(weight), sparsity, n, m, "row" if n else "layer")
    errors = [
        reconstruction_error(weight, sgpt, x),
        reconstruction_error(weight, apply_mask(weight.clone(), wanda_mask), x),
        reconstruction_error(weight, apply_mask(weight.clone(), mag_mask), x),
    ]
    assert errors[0] < errors[1] < errors[2], errors
    assert torch.equal(sgpt[sgpt_mask], torch.zeros(int(sgpt_mask.sum())))  # pruned entries are exactly 0
    if n:
        assert is_nm_sparse(sgpt_mask, n, m)
    else:
        assert int(sgpt_mask.sum()) == 4 * int(32 * 16 * sparsity)  # exact per block of 16 columns


def test_sparsegpt_keeps_prior_mask_and_zeroes_dead_inputs():
    x = correlated_inputs(columns=32)
    x[:, 5] = 0.0  # a dead input channel
    weight = torch.randn(8, 32)
    prior = torch.zeros(8, 32, dtype=torch.bool)
    prior[:, 31] = True
    new, mask = sparsegpt_prune(weight, 2 * x.T @ x / len(x), 0.5, blocksize=8, pruned=prior)
    assert mask[:, 31].all() and (new[:, 5] == 0).all() and (new[mask] == 0).all()
    assert abs(mask.float().mean().item() - 0.5) < 0.05


@pytest.mark.parametrize(("n", "m"), [(0, 0), (2, 4)])
def test_matrices_sharing_an_input_are_solved_together_as_alone(n, m):
    from bird_bone.prune.sparsegpt import sparsegpt_prune_many

    x = correlated_inputs(columns=48)
    hessian = 2 * x.T @ x / len(x)
    weights = [torch.randn(24, 48), torch.randn(8, 48), torch.randn(8, 48)]
    prior = torch.zeros(8, 48, dtype=torch.bool)
    prior[:, ::4] = torch.rand(8, 12) < 0.5  # at most one per group of 4: fits 2:4
    together = sparsegpt_prune_many(weights, hessian, 0.5, n, m, blocksize=16, pruned=[None, prior, None])
    for weight, p, (new, mask) in zip(weights, [None, prior, None], together):
        alone, alone_mask = sparsegpt_prune(weight, hessian, 0.5, n, m, blocksize=16, pruned=p)
        assert torch.equal(mask, alone_mask)
        assert torch.allclose(new, alone, atol=1e-5)
        if p is not None:
            assert mask[p].all()


def test_inverse_hessian_factor_is_the_upper_cholesky_factor_of_the_dampened_inverse():
    from bird_bone.prune.sparsegpt import dampened_hessian, inverse_hessian_factor

    x = torch.randn(200, 24)
    x[:, 5] = 0.0  # a dead input
    hessian = 2 * x.T @ x / 200
    U, dead = inverse_hessian_factor(hessian, percdamp=0.01)
    H, _ = dampened_hessian(hessian, 0.01)
    assert dead.nonzero().flatten().tolist() == [5]
    assert torch.equal(U, torch.triu(U)) and bool((torch.diag(U) > 0).all())
    assert torch.allclose(U.T @ U @ H, torch.eye(24), atol=1e-4)


@pytest.mark.parametrize("n, m", [(0, 0), (2, 4)])
def test_sparsegpt_keeps_a_prior_that_prunes_more_than_asked(n, m):
    x = torch.randn(128, 16)
    weight = torch.randn(8, 16)
    prior = torch.zeros(8, 16, dtype=torch.bool)
    prior[:, 1:4] = True  # 3 of 4 in the first group: later columns of it would get OBS updates
    prior[0, :12] = True
    weight[prior] = 0.0
    pruned, mask = sparsegpt_prune(weight, 2 * x.T @ x / 128, 0.5, n, m, blocksize=8, pruned=prior)
    assert bool(mask[prior].all()) and bool((pruned[mask] == 0).all())
    if n:
        per_group = mask.view(8, 4, 4).sum(-1)
        assert per_group[0].tolist() == [4, 4, 4, 2] and bool((per_group[1:, 0] == 3).all())
