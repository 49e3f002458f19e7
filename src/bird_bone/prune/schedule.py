"""The schedule of pruning steps ("slow radius"): the cumulative sparsity after each step."""

from __future__ import annotations


def sparsity_schedule(target: float, steps: int, kind: str = "linear") -> list[float]:
    """Cumulative sparsity after each step. ``cubic``: Zhu & Gupta (2017) eq. 1, prunes fast early."""
    if not 0.0 <= target < 1.0:
        raise ValueError(f"target sparsity must be in [0, 1), got {target}")
    if steps < 1:
        raise ValueError(f"waves must be >= 1, got {steps}")
    if kind == "linear":
        return [target * (k + 1) / steps for k in range(steps)]
    if kind == "cubic":
        return [target * (1 - (1 - (k + 1) / steps) ** 3) for k in range(steps)]
    raise ValueError(f"unknown schedule '{kind}' (linear, cubic)")
