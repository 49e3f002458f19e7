"""Shared Hessian math of the second-order methods (SparseGPT pruning, GPTVQ quantization, the
GPTVQ codebook update): dampening H = 2 X^T X / n and the Cholesky factor of its inverse.

One module both ``prune/`` and ``quant/`` import, so neither borrows from the other.
"""

from __future__ import annotations

import torch


def dampened_hessian(hessian: torch.Tensor, percdamp: float = 0.01) -> tuple[torch.Tensor, torch.Tensor]:
    """H + lambda I, lambda = percdamp * mean(diag H) (SparseGPT sec. 3.2), with the diagonal of dead
    inputs (zero diagonal: their weights carry no signal) set to 1 first; and the mask of those inputs."""
    H = hessian.float().clone()
    dead = torch.diag(H) == 0
    H[dead, dead] = 1.0
    H.diagonal().add_(percdamp * torch.mean(torch.diag(H)))
    return H, dead


def inverse_hessian_factor(hessian: torch.Tensor, percdamp: float = 0.01) -> tuple[torch.Tensor, torch.Tensor]:
    """Upper Cholesky factor U of (H + lambda I)^-1 = U^T U (:func:`dampened_hessian`), and the mask
    of dead inputs.

    One factorization and one triangular inverse: with J the order-reversing permutation and
    J H J = L L^T, U = J L^-1 J (the reference inverts H, then factors the inverse)."""
    H, dead = dampened_hessian(hessian, percdamp)
    L = torch.linalg.cholesky(H.flip(0, 1))
    eye = torch.eye(H.shape[0], dtype=H.dtype, device=H.device)
    return torch.linalg.solve_triangular(L, eye, upper=False, left=False).flip(0, 1), dead  # X L = I
