"""Truncated SVD of linear projections, activation-aware where calibration statistics are known.

A weight W [out, in] becomes B A with A [r, in], B [out, r], which saves memory when
r (in + out) < in out. Plain SVD minimises ||W - BA||_F; what matters is the output error
||(W - BA) X^T|| on real inputs, so, as in ASVD (Yuan et al. 2023, sec. 3.2) with the diagonal of the
input Gram matrix, each input column j is first scaled by s_j = ||X_j|| (its RMS over calibration
tokens): W diag(s) = U S V^T, then A = S_r^(1/2) V_r^T diag(1/s) and B = U_r S_r^(1/2).
The rank is the smallest that keeps ``energy`` of sum(S^2) (of the scaled matrix).
"""

from __future__ import annotations

import torch
from torch import nn


class LowRankLinear(nn.Module):
    """``up(down(x))``: a rank-``rank`` replacement for an ``nn.Linear``."""

    def __init__(self, in_features: int, out_features: int, rank: int, bias: bool = False, dtype=None):
        super().__init__()
        self.in_features, self.out_features, self.rank = in_features, out_features, rank
        self.down = nn.Linear(in_features, rank, bias=False, dtype=dtype)
        self.up = nn.Linear(rank, out_features, bias=bias, dtype=dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.up(self.down(x))


def rank_for_energy(singular_values: torch.Tensor, energy: float) -> int:
    """Smallest r with sum(S[:r]^2) >= energy * sum(S^2)."""
    power = singular_values.double() ** 2
    cumulative = torch.cumsum(power, 0) / power.sum()
    return (
        int(
            torch.searchsorted(
                cumulative, torch.tensor(energy, dtype=cumulative.dtype, device=cumulative.device)
            ).item()
        )
        + 1
    )


def factorize(
    weight: torch.Tensor, energy: float, column_scale: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor, float]:
    """(A [r, in], B [out, r], energy kept) for ``weight`` [out, in] (see module docstring)."""
    w = weight.double()
    scale = None
    if column_scale is not None:
        scale = column_scale.double().clamp_min(column_scale.double().max() * 1e-6)
        w = w * scale
    u, s, vh = torch.linalg.svd(w, full_matrices=False)
    r = min(rank_for_energy(s, energy), s.numel())
    root = s[:r].sqrt()
    a = root[:, None] * vh[:r]
    if scale is not None:
        a = a / scale
    b = u[:, :r] * root
    kept = float((s[:r] ** 2).sum() / (s**2).sum())
    return a.to(weight.dtype), b.to(weight.dtype), kept


def replace_with_low_rank(model: nn.Module, name: str, rank: int) -> LowRankLinear:
    """Put an (uninitialised) LowRankLinear of ``rank`` where linear ``name`` is; returns it."""
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name)
    old = getattr(parent, child)
    new = LowRankLinear(old.in_features, old.out_features, rank, old.bias is not None, old.weight.dtype)
    setattr(parent, child, new.to(old.weight.device))
    return new


@torch.no_grad()
def factorize_linears(
    model: nn.Module,
    names: list[str],
    energy: float,
    column_scales: dict[str, torch.Tensor] | None = None,
) -> dict[str, dict]:
    """Replace each named linear by its truncated SVD where that saves parameters.

    Returns, per name: rank, parameters before and after, energy kept, and whether it was replaced
    (a rank too high to save memory leaves the dense layer and says so).
    """
    report = {}
    for name in names:
        linear = model.get_submodule(name)
        if not isinstance(linear, nn.Linear):
            raise TypeError(f"{name} is a {type(linear).__name__}, not an nn.Linear")
        scale = (column_scales or {}).get(name)
        a, b, kept = factorize(linear.weight.data, energy, scale)
        rank = a.shape[0]
        dense = linear.in_features * linear.out_features
        low = rank * (linear.in_features + linear.out_features)
        entry = {"rank": rank, "parameters_before": dense, "parameters_after": low, "energy_kept": kept}
        if low >= dense:
            report[name] = {
                **entry,
                "replaced": False,
                "parameters_after": dense,
                "reason": f"rank {rank} for {energy:.0%} energy does not save memory",
            }
            continue
        bias = linear.bias
        new = replace_with_low_rank(model, name, rank)
        new.down.weight.copy_(a)
        new.up.weight.copy_(b)
        if bias is not None:
            new.up.bias.copy_(bias)
        report[name] = {**entry, "replaced": True}
    return report


def low_rank_structure(model: nn.Module) -> dict[str, int]:
    """{module name: rank} of every LowRankLinear in ``model`` (stored in checkpoint metadata)."""
    return {name: m.rank for name, m in model.named_modules() if isinstance(m, LowRankLinear)}
