"""NOVAQ stages 1-2 building blocks: normalization undone exactly, seeded k-means, codebook error
falling with K, bit packing."""

from __future__ import annotations

import pytest
import torch

from bird_bone.quant.codebook import index_bits, kmeans, pack_bits, residual_quantize, unpack_bits
from bird_bone.quant.normalize import denormalize, normalize


def test_normalization_is_undone_exactly_and_flattens_outliers():
    torch.manual_seed(0)
    w = torch.randn(200, 64) * 0.02 + torch.linspace(-0.1, 0.1, 200)[:, None]
    w[7] *= 40  # one loud channel
    n, norm = normalize(w, outlier_threshold=0.01)
    assert 7 in norm.outliers.tolist()
    assert norm.outliers.numel() == 2  # ceil(1 % of 200)
    assert torch.allclose(n.mean(1), torch.zeros(200), atol=2e-4)  # rows centred (mu in float16)
    assert n[7].std() < 3 * n[0].std()  # the outlier now has an ordinary spread
    assert (norm.scale != 1).sum() == 2
    assert torch.allclose(denormalize(n, norm), w, atol=1e-6)


def test_normalization_without_outliers_keeps_scales_at_one():
    w = torch.randn(10, 8)
    _, norm = normalize(w, outlier_threshold=0.0)
    assert norm.outliers.numel() == 0 and torch.equal(norm.scale, torch.ones(10))
    with pytest.raises(ValueError, match="outlier_threshold"):
        normalize(w, 1.5)


def test_kmeans_is_seeded_and_deterministic():
    x = torch.randn(2, 500, 4)
    a = kmeans(x, 8, iterations=10, seed=3)
    b = kmeans(x, 8, iterations=10, seed=3)
    c = kmeans(x, 8, iterations=10, seed=4)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[0], c[0])
    assert a[0].shape == (2, 8, 4) and a[1].shape == (2, 500)


def test_kmeans_finds_separated_clusters_and_uses_every_codeword():
    centres = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    x = (centres[torch.arange(300) % 3] + 0.01 * torch.randn(300, 2))[None]
    cent, codes = kmeans(x, 3, iterations=20, seed=0)
    found = sorted(tuple(round(v) for v in c.tolist()) for c in cent[0])
    assert found == [(0, 0), (0, 10), (10, 0)]
    assert codes.unique().numel() == 3


def test_codebook_error_falls_as_k_grows():
    x = torch.randn(1, 4000, 4)
    errors = []
    for k1 in (4, 16, 64):
        rq = residual_quantize(x, k1, 4, iterations=15, seed=0)
        errors.append(float((rq.decode() - x).pow(2).mean()))
    assert errors[0] > errors[1] > errors[2]
    only_primary = kmeans(x, 16, 15, 0)
    primary_err = float((x - only_primary[0][0][only_primary[1][0]]).pow(2).mean())
    assert errors[1] < primary_err  # the residual stage helps


def test_subsampled_kmeans_assigns_every_vector():
    x = torch.randn(1, 5000, 4)
    cent, codes = kmeans(x, 16, iterations=5, seed=0, max_samples=500)
    assert codes.shape == (1, 5000) and int(codes.max()) < 16


@pytest.mark.parametrize("bits", [1, 2, 3, 4, 6, 8, 12])
def test_pack_unpack_round_trip_and_size(bits):
    values = torch.randint(0, 1 << bits, (1001,))
    packed = pack_bits(values, bits)
    assert packed.dtype == torch.uint8 and packed.numel() == -(-1001 * bits // 8)
    assert torch.equal(unpack_bits(packed, bits, 1001), values)


def test_pack_rejects_out_of_range_and_wrong_length():
    with pytest.raises(ValueError, match="fit in 2 bits"):
        pack_bits(torch.tensor([4]), 2)
    with pytest.raises(ValueError, match="expected"):
        unpack_bits(torch.zeros(3, dtype=torch.uint8), 4, 10)
    assert index_bits(16) == 4 and index_bits(4) == 2 and index_bits(1) == 0
