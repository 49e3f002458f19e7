"""Mask selection from importance scores. A mask is a bool tensor shaped like the weight, True
where the weight is pruned (zero). Masks are the source of truth for sparsity: every later stage
re-applies them, and a weight already pruned stays pruned unless regrowth reopens it."""

from __future__ import annotations

import numpy as np
import torch


def _force(scores: torch.Tensor, pruned: torch.Tensor | None, protected: torch.Tensor | None) -> torch.Tensor:
    """Already-pruned weights sort first (-inf), protected ones (e.g. just regrown) last (+inf)."""
    scores = scores.float()
    if pruned is None and protected is None:
        return scores
    scores = scores.clone()
    if pruned is not None:
        scores[pruned.to(scores.device)] = float("-inf")
    if protected is not None:
        scores[protected.to(scores.device)] = float("inf")
    return scores


def _keep(mask: torch.Tensor, pruned: torch.Tensor | None, protected: torch.Tensor | None) -> torch.Tensor:
    """A weight already pruned stays pruned (unless protected), even where the prior prunes more
    than is asked now (an N:M group with more than N pruned still has at most M - N weights left)."""
    if pruned is None:
        return mask
    keep = pruned.to(mask.device, torch.bool)
    keep = keep if protected is None else keep & ~protected.to(mask.device, torch.bool)
    return mask | keep


def kth_smallest(scores: torch.Tensor, k: int) -> torch.Tensor:
    """The ``k``-th smallest entry (1-based) of every row of ``scores`` [rows, columns], [rows, 1].

    On the CPU numpy's introselect (SIMD-sorted partitions) is about 3x faster than
    ``torch.kthvalue`` on 2 threads; both order NaN last."""
    if scores.device.type == "cpu" and scores.dtype in (torch.float32, torch.float64):
        part = np.partition(scores.detach().contiguous().numpy(), k - 1, axis=1)
        return torch.from_numpy(part[:, k - 1 : k].copy())
    return scores.kthvalue(k, dim=1, keepdim=True).values


def lowest_k_mask(scores: torch.Tensor, k: int) -> torch.Tensor:
    """Exactly the ``k`` lowest entries of every row of ``scores`` [rows, columns]; ties go to the
    lower column index, as a stable sort would give them. Linear time (selection), no full sort."""
    if k <= 0:
        return torch.zeros_like(scores, dtype=torch.bool)
    kth = kth_smallest(scores, k)
    mask = scores <= kth
    if bool((mask.sum(1) == k).all()):  # the usual case: no tie with the k-th value past it
        return mask
    below = scores < kth
    ties = scores == kth
    need = k - below.sum(1, keepdim=True)
    return below | (ties & (ties.cumsum(1) <= need))


def check_nm(n: int, m: int, columns: int, name: str = "weight") -> None:
    if not 0 < n < m:
        raise ValueError(f"N:M pattern needs 0 < N < M, got {n}:{m}")
    if columns % m:
        raise ValueError(f"{name}: N:M pattern {n}:{m} does not divide its {columns} input columns")


def select_row_mask(scores: torch.Tensor, sparsity: float, pruned=None, protected=None) -> torch.Tensor:
    """Prune the ``int(columns * sparsity)`` lowest scores of every output row (Wanda, sec. 3)."""
    scores = _force(scores, pruned, protected)
    return _keep(lowest_k_mask(scores, int(scores.shape[1] * sparsity)), pruned, protected)


def select_layer_mask(scores: torch.Tensor, sparsity: float, pruned=None, protected=None) -> torch.Tensor:
    """Prune the ``int(numel * sparsity)`` lowest scores of the whole matrix (magnitude pruning)."""
    scores = _force(scores, pruned, protected)
    mask = lowest_k_mask(scores.view(1, -1), int(scores.numel() * sparsity)).view_as(scores)
    return _keep(mask, pruned, protected)


def select_nm_mask(scores: torch.Tensor, n: int, m: int, pruned=None, protected=None) -> torch.Tensor:
    """In every group of ``m`` consecutive input columns of a row, prune the ``n`` lowest scores
    (and keep any more that ``pruned`` already has)."""
    rows, columns = scores.shape
    check_nm(n, m, columns)
    groups = _force(scores, pruned, protected).view(rows, columns // m, m)
    mask = torch.zeros_like(groups, dtype=torch.bool)
    mask.scatter_(2, torch.topk(groups, n, dim=2, largest=False).indices, True)
    return _keep(mask.view(rows, columns), pruned, protected)


def select_mask(
    scores: torch.Tensor, sparsity: float, n: int = 0, m: int = 0, scope: str = "row", pruned=None, protected=None
) -> torch.Tensor:
    """N:M when ``n`` and ``m`` are set, else unstructured per ``scope`` ("row" or "layer")."""
    if n and m:
        return select_nm_mask(scores, n, m, pruned, protected)
    if not 0.0 <= sparsity < 1.0:
        raise ValueError(f"sparsity must be in [0, 1), got {sparsity}")
    select = {"row": select_row_mask, "layer": select_layer_mask}[scope]
    return select(scores, sparsity, pruned, protected)


@torch.no_grad()
def apply_mask(weight: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Zero the pruned entries of ``weight`` in place; returns it. Applying twice changes nothing."""
    if mask.shape != weight.shape:
        raise ValueError(f"mask shape {tuple(mask.shape)} does not match weight shape {tuple(weight.shape)}")
    return weight.masked_fill_(mask.to(weight.device), 0.0)


def is_nm_sparse(mask: torch.Tensor, n: int, m: int) -> bool:
    """True when every group of ``m`` consecutive columns has exactly ``n`` pruned entries."""
    rows, columns = mask.shape
    return columns % m == 0 and bool((mask.view(rows, columns // m, m).sum(-1) == n).all())
