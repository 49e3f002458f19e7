"""Magnitude pruning: importance |W| (Han et al., 2015), thresholded over the whole layer."""

from __future__ import annotations

import torch


def magnitude_scores(weight: torch.Tensor) -> torch.Tensor:
    return weight.detach().abs().float()
