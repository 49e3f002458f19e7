import pytest
import torch

from bird_bone.prune.magnitude import magnitude_scores
from bird_bone.prune.masks import apply_mask, is_nm_sparse, kth_smallest, lowest_k_mask, select_mask
from bird_bone.prune.wanda import wanda_scores


def test_row_mask_prunes_exactly_k_per_row_matching_a_stable_sort():
    torch.manual_seed(0)
    scores = torch.randn(16, 40).abs()
    mask = select_mask(scores, 0.5, scope="row")
    assert (mask.sum(1) == 20).all()
    reference = torch.zeros_like(mask).scatter_(1, torch.sort(scores, dim=1, stable=True).indices[:, :20], True)
    assert torch.equal(mask, reference)


def test_layer_mask_has_exact_global_sparsity_and_ties_go_to_low_index():
    scores = torch.tensor([[0.0, 0.0, 0.0, 1.0], [0.0, 2.0, 3.0, 4.0]])
    assert lowest_k_mask(scores.view(1, -1), 3).view(-1).tolist() == [True, True, True] + [False] * 5
    mask = select_mask(torch.rand(30, 30), 0.7, scope="layer")
    assert int(mask.sum()) == int(900 * 0.7)


def test_nm_mask_is_exactly_two_of_four():
    mask = select_mask(torch.rand(8, 32), 0.0, n=2, m=4)
    assert is_nm_sparse(mask, 2, 4) and not is_nm_sparse(select_mask(torch.rand(8, 32), 0.5), 2, 4)
    with pytest.raises(ValueError, match="does not divide"):
        select_mask(torch.rand(8, 30), 0.0, n=2, m=4)


def test_prior_pruned_stay_pruned_and_protected_stay():
    scores = torch.rand(4, 10)
    prior = torch.zeros(4, 10, dtype=torch.bool)
    prior[:, 9] = True  # the largest-scoring column, pruned earlier
    scores[:, 9] = 10.0
    protected = torch.zeros_like(prior)
    protected[:, 0] = True
    scores[:, 0] = 0.0
    mask = select_mask(scores, 0.5, pruned=prior, protected=protected)
    assert mask[:, 9].all() and not mask[:, 0].any() and (mask.sum(1) == 5).all()


def test_apply_mask_twice_changes_nothing():
    weight = torch.randn(6, 8)
    mask = select_mask(magnitude_scores(weight), 0.5, scope="layer")
    once = apply_mask(weight.clone(), mask)
    assert torch.equal(apply_mask(once.clone(), mask), once)
    assert int((once == 0).sum()) == 24
    with pytest.raises(ValueError, match="does not match"):
        apply_mask(weight, mask.T)


def test_wanda_scores_weight_columns_by_input_norm():
    weight = torch.ones(2, 3)
    scores = wanda_scores(weight, torch.tensor([1.0, 4.0, 9.0]))
    assert torch.equal(scores, torch.tensor([[1.0, 2.0, 3.0], [1.0, 2.0, 3.0]]))
    with pytest.raises(ValueError, match="do not fit"):
        wanda_scores(weight, torch.ones(4))


@pytest.mark.parametrize("k", [1, 7, 20])
def test_kth_smallest_agrees_with_torch_kthvalue_with_infinities(k):
    scores = torch.randn(9, 20, generator=torch.Generator().manual_seed(k))
    scores[0, :5] = float("-inf")  # already pruned weights
    scores[1, 3] = float("inf")  # protected ones
    scores[2] = 0.5  # all tied
    expected = scores.kthvalue(k, dim=1, keepdim=True).values
    assert torch.equal(kth_smallest(scores, k), expected)
    assert torch.equal(kth_smallest(scores.double(), k), expected.double())


@pytest.mark.parametrize("n, m", [(0, 0), (2, 4)])
@pytest.mark.parametrize("scope", ["row", "layer"])
def test_a_prior_that_prunes_more_than_asked_stays_pruned(n, m, scope):
    prior = torch.zeros(6, 16, dtype=torch.bool)
    prior[:, :3] = True  # 3 of the first group of 4 pruned before a 2:4 wave
    prior[0, :12] = True  # row 0: 75 % before a 50 % wave
    mask = select_mask(torch.rand(6, 16), 0.5, n, m, scope, pruned=prior)
    assert bool(mask[prior].all())
    if n:
        per_group = mask.view(6, 4, 4).sum(-1)
        assert per_group[0].tolist() == [4, 4, 4, 2] and bool((per_group[1:, 0] == 3).all())
        assert bool((per_group[1:, 1:] == 2).all())


@pytest.mark.parametrize("n, m", [(0, 0), (2, 4)])
def test_a_protected_weight_is_not_kept_pruned_by_the_prior(n, m):
    prior = torch.zeros(3, 8, dtype=torch.bool)
    prior[:, :3] = True
    protected = torch.zeros_like(prior)
    protected[:, 0] = True  # regrown since the prior was taken
    mask = select_mask(torch.rand(3, 8), 0.5, n, m, "row", pruned=prior, protected=protected)
    assert not mask[:, 0].any() and bool(mask[:, 1:3].all())
