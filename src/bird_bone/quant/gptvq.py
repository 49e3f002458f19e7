"""NOVAQ stage 2, Hessian-aware: residual vector codebooks fitted and assigned GPTVQ-style
(van Baalen et al. 2024, "GPTVQ: The Blessing of Dimensionality for LLM Quantization", sec. 3).

The normalized matrix is cut into tiles of ``tile_rows`` x ``tile_cols`` weights, one codebook
pair per tile (the codebook scope). Column tiles are processed left to right: the tile's primary
and residual codebooks are fitted by k-means weighted by the inverse-Hessian metric 1 / [U]_jj^2
(U the upper Cholesky factor of H^-1, H = 2 X^T X / n), then its columns are taken ``d`` at a
time: each row's sub-vector goes to the codeword pair c1 + c2 nearest under that metric, and the
quantization error is spread over the not-yet-quantized columns through U, exactly as GPTQ /
SparseGPT do for scalars (the same solve as ``prune/sparsegpt.py``; the factor is in ``bird_bone.hessian``).
Written by hand: no maintained package exposes a GPTVQ solve over torch tensors.
"""

from __future__ import annotations

import torch

from bird_bone.hessian import inverse_hessian_factor
from bird_bone.quant.codebook import ResidualCodes, assign, gather_codewords, residual_quantize

JOINT_LIMIT = 1024  # up to K1 * K2 pairs searched jointly; above that c1 first, then c2 on the rest


def to_tiles(w: torch.Tensor, tile_rows: int, tile_cols: int, d: int) -> torch.Tensor:
    """[rows, cols] -> [G, N, d], G = (rows / tile_rows) * (cols / tile_cols) tiles, row-group major,
    each tile's sub-vectors in row-major order."""
    rows, cols = w.shape
    gr, gc = rows // tile_rows, cols // tile_cols
    tiles = w.reshape(gr, tile_rows, gc, tile_cols).permute(0, 2, 1, 3)
    return tiles.reshape(gr * gc, tile_rows * tile_cols // d, d)


def from_tiles(x: torch.Tensor, rows: int, cols: int, tile_rows: int, tile_cols: int) -> torch.Tensor:
    """Inverse of :func:`to_tiles`: [G, N, d] -> [rows, cols] (differentiable)."""
    gr, gc = rows // tile_rows, cols // tile_cols
    return x.reshape(gr, gc, tile_rows, tile_cols).permute(0, 2, 1, 3).reshape(rows, cols)


def _pair_table(codes: ResidualCodes) -> torch.Tensor:
    """Every sum c1 + c2 of a tile's codebooks: [G, K1 * K2, d], pair p = i1 * K2 + i2."""
    p, r = codes.primary, codes.residual
    return (p[:, :, None, :] + r[:, None, :, :]).reshape(p.shape[0], -1, p.shape[2])


def _nearest_pair(sub: torch.Tensor, metric: torch.Tensor, codes: ResidualCodes, table) -> tuple:
    """Codes (i1, i2) of the pair nearest each sub-vector: sub [G, R, d], metric [d]."""
    w = metric.expand_as(sub).contiguous()
    k2 = codes.residual.shape[1]
    if table is not None:
        pair = assign(sub, table, w)
        return pair // k2, pair % k2
    i1 = assign(sub, codes.primary, w)
    i2 = assign(sub - gather_codewords(codes.primary, i1), codes.residual, w)
    return i1, i2


@torch.no_grad()
def gptvq_quantize(
    weight: torch.Tensor,
    hessian: torch.Tensor | None,
    k1: int,
    k2: int,
    d: int,
    tile_rows: int,
    tile_cols: int,
    iterations: int = 20,
    seed: int = 0,
    max_samples: int = 0,
    percdamp: float = 0.01,
) -> ResidualCodes:
    """Quantize ``weight`` [rows, cols] (already normalized) -> codes over :func:`to_tiles` tiles.

    ``hessian`` [cols, cols] of the layer's inputs; None: plain (unweighted, no error feedback)."""
    W = weight.detach().float().clone()
    rows, cols = W.shape
    gr, gc = rows // tile_rows, cols // tile_cols
    U = inverse_hessian_factor(hessian, percdamp)[0] if hessian is not None else None
    metric = W.new_ones(cols) if U is None else 1.0 / torch.diag(U).square()  # GPTVQ's per-column weight
    primary = W.new_empty(gr, gc, k1, d)
    residual = W.new_empty(gr, gc, k2, d)
    codes1 = torch.empty(gr, gc, tile_rows, tile_cols // d, dtype=torch.long, device=W.device)
    codes2 = torch.empty_like(codes1)
    for c in range(gc):
        i1, i2 = c * tile_cols, (c + 1) * tile_cols
        W1 = W[:, i1:i2].clone()
        x = to_tiles(W1, tile_rows, tile_cols, d)  # [gr, N, d]
        wts = metric[i1:i2].view(1, 1, -1, d).expand(gr, tile_rows, -1, -1).reshape(x.shape)
        codes = residual_quantize(x, k1, k2, iterations, seed + 2 * c, max_samples, wts)
        primary[:, c], residual[:, c] = codes.primary, codes.residual
        table = _pair_table(codes) if k1 * k2 <= JOINT_LIMIT else None
        if U is None:
            a, b = _nearest_pair(x, metric[i1:i2].view(-1, d).repeat(tile_rows, 1), codes, table)
            codes1[:, c] = a.view(gr, tile_rows, -1)
            codes2[:, c] = b.view(gr, tile_rows, -1)
            continue
        U1 = U[i1:i2, i1:i2]
        Err1 = torch.zeros_like(W1)
        for s in range(0, tile_cols, d):
            sub = W1[:, s : s + d].reshape(gr, tile_rows, d)
            a, b = _nearest_pair(sub, metric[i1 + s : i1 + s + d], codes, table)
            q = (gather_codewords(codes.primary, a) + gather_codewords(codes.residual, b)).reshape(rows, d)
            codes1[:, c, :, s // d], codes2[:, c, :, s // d] = a, b
            # GPTQ's column-by-column update with the d codewords fixed, in one step: W_b - Q = E U_bb
            E = torch.linalg.solve_triangular(U1[s : s + d, s : s + d], W1[:, s : s + d] - q, upper=True, left=False)
            W1[:, s + d :] -= E @ U1[s : s + d, s + d :]
            W1[:, s : s + d] = q
            Err1[:, s : s + d] = E
        W[:, i2:] -= Err1 @ U[i1:i2, i2:]
    return ResidualCodes(
        primary.reshape(gr * gc, k1, d),
        residual.reshape(gr * gc, k2, d),
        codes1.reshape(gr * gc, -1),
        codes2.reshape(gr * gc, -1),
    )
