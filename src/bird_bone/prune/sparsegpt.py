"""SparseGPT: one-shot pruning with an approximate OBS update (Frantar & Alistarh, 2023,
arXiv:2301.00774), for unstructured and N:M sparsity.

Columns are pruned left to right in blocks; each pruned weight's error is spread over the
not-yet-processed columns through the Cholesky factor of the inverse Hessian H = 2 X^T X / n.
Written by hand: no maintained package exposes the solver as a tensor-in, tensor-out function.

Speed (CPU): the solver works on W^T, so that one input column is one contiguous row; inside a
block the per-column update only reaches a small sub-block, the rest of the block is updated by
one product per sub-block (the reference's "lazy batch" trick, used twice). Matrices that see the
same input (q/k/v, gate/up) share H, and therefore H's factor and the column loop: they are
stacked row-wise and solved at once (``sparsegpt_prune_many``); each keeps its own block mask.
"""

from __future__ import annotations

import torch

from bird_bone.hessian import dampened_hessian, inverse_hessian_factor  # noqa: F401 (re-exported)
from bird_bone.prune.masks import lowest_k_mask


def _block_mask(W1t: torch.Tensor, d: torch.Tensor, sparsity: float, prior, bounds: list[int]) -> torch.Tensor:
    """Adaptive mask of one block (sec. 3.3), per stacked matrix: the lowest w^2 / [H^-1]_cc^2,
    exactly ``int(numel * sparsity)`` of them. ``W1t`` is the block transposed, [block, rows]."""
    scores = W1t.square() / d.square().unsqueeze(1)
    if prior is not None:
        scores[prior] = float("-inf")
    mask = torch.empty_like(W1t, dtype=torch.bool)
    for r1, r2 in zip(bounds[:-1], bounds[1:]):
        part = scores[:, r1:r2]
        mask[:, r1:r2] = lowest_k_mask(part.reshape(1, -1), int(part.numel() * sparsity)).view_as(part)
    return mask if prior is None else mask | prior


def _nm_mask(W1t: torch.Tensor, dinv2: torch.Tensor, n: int, prior) -> torch.Tensor:
    """The ``n`` lowest w^2 / [H^-1]_cc^2 of every row within these ``m`` columns ([m, rows])."""
    scores = W1t.square().mul_(dinv2.unsqueeze(1))
    if prior is not None:
        scores[prior] = float("-inf")
    mask = torch.zeros_like(W1t, dtype=torch.bool)
    mask.scatter_(0, torch.topk(scores, n, dim=0, largest=False).indices, True)
    return mask if prior is None else mask | prior  # more than n already pruned stay pruned


@torch.no_grad()
def _solve(Wt, Hinv, sparsity, n, m, blocksize, prior_t, bounds) -> torch.Tensor:
    """Prune ``Wt`` [columns, rows] in place (OBS updates, eq. 3); returns the mask, transposed."""
    columns = Wt.shape[0]
    mask_t = torch.zeros_like(Wt, dtype=torch.bool)
    sub = m * max(1, 16 // m) if n and m else 16  # per-column updates reach this far; a multiple of m
    for i1 in range(0, columns, blocksize):
        i2 = min(i1 + blocksize, columns)
        W1t, Hinv1, mask1 = Wt[i1:i2], Hinv[i1:i2, i1:i2], mask_t[i1:i2]
        prior1 = None if prior_t is None else prior_t[i1:i2]
        dinv = torch.diag(Hinv1).reciprocal()
        if not (n and m):
            mask1.copy_(_block_mask(W1t, 1.0 / dinv, sparsity, prior1, bounds))
        scale = mask1 * dinv.unsqueeze(1)  # err = w * [pruned] / [H^-1]_pp (eq. 3), per column
        Err1 = torch.empty_like(W1t)
        w_rows, e_rows, s_rows = W1t.unbind(0), Err1.unbind(0), scale.unbind(0)
        for s1 in range(0, i2 - i1, sub):
            s2 = min(s1 + sub, i2 - i1)
            for i in range(s1, s2):
                if n and m and i % m == 0:
                    p = None if prior1 is None else prior1[i : i + m]
                    mask1[i : i + m] = _nm_mask(W1t[i : i + m], dinv[i : i + m].square(), n, p)
                    scale[i : i + m] = mask1[i : i + m] * dinv[i : i + m].unsqueeze(1)
                torch.mul(w_rows[i], s_rows[i], out=e_rows[i])
                if i + 1 < s2:  # W_j -= [H^-1]_ij * err for the rest of the sub-block
                    W1t[i + 1 : s2].addr_(Hinv1[i, i + 1 : s2], e_rows[i], alpha=-1.0)
            W1t[s2:].addmm_(Hinv1[s1:s2, s2:].T, Err1[s1:s2], alpha=-1.0)
        Wt[i2:].addmm_(Hinv[i1:i2, i2:].T, Err1, alpha=-1.0)
    Wt.masked_fill_(mask_t, 0.0)  # pruned weights exactly zero
    return mask_t


@torch.no_grad()
def sparsegpt_prune_many(
    weights: list[torch.Tensor],
    hessian: torch.Tensor,
    sparsity: float,
    n: int = 0,
    m: int = 0,
    blocksize: int = 128,
    percdamp: float = 0.01,
    pruned: list[torch.Tensor | None] | None = None,
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Prune several weights [out_k, in] that share one input Hessian [in, in] -> (weight, mask) each.

    Same result as pruning each alone (rows never mix; each matrix keeps its own block masks),
    with one Hessian factor and one column loop for all of them.
    """
    Hinv, dead = inverse_hessian_factor(hessian, percdamp)
    Wt = torch.cat([w.detach().float() for w in weights]).T.contiguous()  # [in, sum of out_k]
    Wt[dead] = 0.0
    bounds = [0]
    for w in weights:
        bounds.append(bounds[-1] + w.shape[0])
    pruned = pruned or [None] * len(weights)
    prior_t = None
    if any(p is not None for p in pruned):
        prior_t = torch.cat(
            [
                torch.zeros_like(w, dtype=torch.bool) if p is None else p.to(w.device, torch.bool)
                for w, p in zip(weights, pruned)
            ]
        ).T.contiguous()
    mask_t = _solve(Wt, Hinv, sparsity, n, m, blocksize, prior_t, bounds)
    return [
        (Wt[:, r1:r2].T.to(w.dtype).contiguous(), mask_t[:, r1:r2].T.contiguous())
        for w, r1, r2 in zip(weights, bounds[:-1], bounds[1:])
    ]


def sparsegpt_prune(
    weight: torch.Tensor,
    hessian: torch.Tensor,
    sparsity: float,
    n: int = 0,
    m: int = 0,
    blocksize: int = 128,
    percdamp: float = 0.01,
    pruned: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Prune ``weight`` [out, in] given the input Hessian [in, in] -> (updated weight, mask).

    ``n``/``m`` set: N:M sparsity chosen every ``m`` columns; else ``sparsity`` per block.
    ``pruned``: a prior mask whose entries stay pruned (earlier waves).
    """
    return sparsegpt_prune_many([weight], hessian, sparsity, n, m, blocksize, percdamp, [pruned])[0]
