"""GPTVQ-style stage 2 on tiny tensors: tiling round trip, Hessian-aware assignment lowers the
layer output error against plain nearest-codeword assignment, weighted k-means follows its weights."""

from __future__ import annotations

import torch

from bird_bone.quant.codebook import gather_codewords, kmeans
from bird_bone.quant.gptvq import from_tiles, gptvq_quantize, to_tiles


def _decode(codes, rows, cols, tile_rows, tile_cols):
    x = gather_codewords(codes.primary, codes.codes1) + gather_codewords(codes.residual, codes.codes2)
    return from_tiles(x, rows, cols, tile_rows, tile_cols)


def test_tiles_round_trip_and_hold_contiguous_blocks():
    w = torch.arange(8 * 12, dtype=torch.float32).view(8, 12)
    tiles = to_tiles(w, 4, 6, 2)
    assert tiles.shape == (4, 12, 2)
    assert torch.equal(tiles[1].reshape(4, 6), w[:4, 6:])  # tile (row group 0, column group 1)
    assert torch.equal(from_tiles(tiles, 8, 12, 4, 6), w)


def test_hessian_aware_assignment_lowers_output_error():
    torch.manual_seed(0)
    mix = torch.randn(8, 32)  # inputs of rank ~8: strongly correlated columns, as in LLMs
    x = torch.randn(4000, 8) @ mix + 0.05 * torch.randn(4000, 32)
    w = torch.randn(48, 32)
    hessian = 2 * x.T @ x / x.shape[0]
    plain = _decode(gptvq_quantize(w, None, 8, 2, 2, 48, 16, seed=0), 48, 32, 48, 16)
    aware = _decode(gptvq_quantize(w, hessian, 8, 2, 2, 48, 16, seed=0), 48, 32, 48, 16)
    err_plain = float((x @ (w - plain).T).pow(2).sum())
    err_aware = float((x @ (w - aware).T).pow(2).sum())
    assert err_aware < 0.8 * err_plain


def test_smaller_tiles_lower_the_weight_error():
    torch.manual_seed(1)
    w = torch.randn(64, 64) * torch.linspace(0.1, 3, 64)  # column statistics differ along the row
    whole = _decode(gptvq_quantize(w, None, 4, 2, 2, 64, 64), 64, 64, 64, 64)
    tiled = _decode(gptvq_quantize(w, None, 4, 2, 2, 64, 16), 64, 64, 64, 16)
    assert (w - tiled).norm() < 0.9 * (w - whole).norm()


def test_weighted_kmeans_serves_the_heavy_dimension():
    torch.manual_seed(2)
    x = torch.randn(1, 2000, 2)
    heavy_first = torch.tensor([100.0, 0.01]).expand_as(x)
    centroids, codes = kmeans(x, 4, seed=0, weights=heavy_first)
    err = (x - gather_codewords(centroids, codes)).pow(2).mean(1)[0]
    assert err[0] < 0.2 * err[1]  # the weighted dimension is quantized far better
