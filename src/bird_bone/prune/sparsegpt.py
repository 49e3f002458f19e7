"""SparseGPT: one-shot pruning with an approximate OBS update (Frantar & Alistarh, 2023,
arXiv:2301.00774), for unstructured and N:M sparsity.

Columns are pruned left to right in blocks; each pruned weight's error is spread over the
not-yet-processed columns through the Cholesky factor of the inverse Hessian H = 2 X^T X / n.
Written by hand: no maintained package exposes the solver as a tensor-in, tensor-out function.
"""

from __future__ import annotations

import torch

from bird_bone.prune.masks import lowest_k_mask


def inverse_hessian_factor(hessian: torch.Tensor, percdamp: float = 0.01) -> tuple[torch.Tensor, torch.Tensor]:
    """Upper Cholesky factor of (H + lambda I)^-1, lambda = percdamp * mean(diag H) (sec. 3.2),
    and the mask of dead inputs (zero diagonal), whose weights carry no signal."""
    H = hessian.float().clone()
    dead = torch.diag(H) == 0
    H[dead, dead] = 1.0
    H.diagonal().add_(percdamp * torch.mean(torch.diag(H)))
    Hinv = torch.cholesky_inverse(torch.linalg.cholesky(H))
    return torch.linalg.cholesky(Hinv, upper=True), dead


def _block_mask(W1: torch.Tensor, d: torch.Tensor, sparsity: float, prior: torch.Tensor | None) -> torch.Tensor:
    """Adaptive mask of one block (sec. 3.3): the lowest w^2 / [H^-1]_cc^2, exactly k of them."""
    scores = W1.square() / d.square().unsqueeze(0)
    if prior is not None:
        scores[prior] = float("-inf")
    mask = lowest_k_mask(scores.view(1, -1), int(W1.numel() * sparsity)).view_as(W1)
    return mask if prior is None else mask | prior


@torch.no_grad()
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
    W = weight.detach().float().clone()
    rows, columns = W.shape
    Hinv, dead = inverse_hessian_factor(hessian, percdamp)
    W[:, dead] = 0.0
    mask = torch.zeros_like(W, dtype=torch.bool)
    for i1 in range(0, columns, blocksize):
        i2 = min(i1 + blocksize, columns)
        W1, Hinv1 = W[:, i1:i2].clone(), Hinv[i1:i2, i1:i2]
        prior = None if pruned is None else pruned[:, i1:i2].to(torch.bool)
        d = torch.diag(Hinv1)
        mask1 = _block_mask(W1, d, sparsity, prior) if not (n and m) else torch.zeros_like(W1, dtype=torch.bool)
        Err1 = torch.zeros_like(W1)
        for i in range(i2 - i1):
            if n and m and i % m == 0:
                scores = W1[:, i : i + m].square() / d[i : i + m].square().unsqueeze(0)
                if prior is not None:
                    scores[prior[:, i : i + m]] = float("-inf")
                mask1.scatter_(1, i + torch.topk(scores, n, dim=1, largest=False).indices, True)
            w = W1[:, i]
            q = w.masked_fill(mask1[:, i], 0.0)
            err = (w - q) / Hinv1[i, i]  # OBS update, eq. 3: delta = -w_p / [H^-1]_pp * H^-1_:,p
            W1[:, i:] -= err.unsqueeze(1) @ Hinv1[i, i:].unsqueeze(0)
            W1[:, i] = q
            Err1[:, i] = err
        W[:, i1:i2] = W1
        mask[:, i1:i2] = mask1
        W[:, i2:] -= Err1 @ Hinv[i1:i2, i2:]
    return W.to(weight.dtype), mask
