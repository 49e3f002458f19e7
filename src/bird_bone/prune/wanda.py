"""Wanda: pruning by weights and activations (Sun et al., 2023, arXiv:2306.11695).

Importance S_ij = |W_ij| * ||X_j||_2 (eq. 1), compared within each output row i.
"""

from __future__ import annotations

import torch


def wanda_scores(weight: torch.Tensor, input_sq_norms: torch.Tensor) -> torch.Tensor:
    """|W| * sqrt(sum over tokens of X_j^2), broadcast over rows; shapes [out, in] and [in]."""
    if input_sq_norms.shape != (weight.shape[1],):
        raise ValueError(f"input norms of shape {tuple(input_sq_norms.shape)} do not fit weight {tuple(weight.shape)}")
    return weight.detach().abs().float() * input_sq_norms.float().sqrt().unsqueeze(0)
