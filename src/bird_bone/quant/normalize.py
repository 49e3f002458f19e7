"""NOVAQ stage 1, distribution normalization of a weight matrix, per output channel (row).

Each row i loses its mean mu_i; the rows with the largest variance (the top ``outlier_threshold``
fraction) are divided by s_i = sigma_i / Delta, Delta being the median row standard deviation, so
every row has a comparable spread and one codebook can serve them all (s_i = 1 elsewhere).
mu and s are rounded to float16 here, as they are stored, so that denormalization at load time
reproduces exactly what the quantizer saw. A dozen lines of torch: no library does this.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch


@dataclass
class Normalization:
    """What stage 1 removed from a [rows, cols] matrix: undo with :func:`denormalize`."""

    mean: torch.Tensor  # [rows] float32 (float16-representable)
    scale: torch.Tensor  # [rows] float32, 1 except at the outlier rows
    outliers: torch.Tensor  # [n] int64 row indices whose scale is not 1
    delta: float

    @property
    def rows(self) -> int:
        return self.mean.numel()


def normalize(weight: torch.Tensor, outlier_threshold: float = 0.01) -> tuple[torch.Tensor, Normalization]:
    """Return (normalized weight, parameters): w_ij = mu_i + s_i * n_ij."""
    if weight.ndim != 2:
        raise ValueError(f"normalize expects a 2-D weight, got shape {tuple(weight.shape)}")
    if not 0.0 <= outlier_threshold <= 1.0:
        raise ValueError(f"outlier_threshold must be in [0, 1], got {outlier_threshold}")
    w = weight.detach().float()
    mean = w.mean(dim=1).half().float()
    centred = w - mean[:, None]
    sigma = centred.std(dim=1, unbiased=False)
    delta = float(sigma.median().clamp_min(1e-8))
    count = math.ceil(outlier_threshold * w.shape[0]) if outlier_threshold > 0 else 0
    scale = torch.ones_like(mean)
    outliers = (
        torch.topk(sigma, count).indices.sort().values if count else torch.zeros(0, dtype=torch.long, device=w.device)
    )
    if count:
        s = (sigma[outliers] / delta).clamp_min(1e-4).half().float()  # stored as float16
        scale[outliers] = s
    return centred / scale[:, None], Normalization(mean, scale, outliers, delta)


def denormalize(normalized: torch.Tensor, norm: Normalization) -> torch.Tensor:
    """Invert :func:`normalize`: mu_i + s_i * n_ij (differentiable in all three)."""
    return normalized * norm.scale[:, None] + norm.mean[:, None]
