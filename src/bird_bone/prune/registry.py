"""The pruning methods, by name. Each entry names its score or solver and the statistics of a
linear's input it needs; the calibration passes collect only those. Adding a method means adding
its module (tensor in, tensor out) and one entry here; ``prune.method`` accepts the names below."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch

from bird_bone.prune.magnitude import magnitude_scores
from bird_bone.prune.sparsegpt import sparsegpt_prune_many
from bird_bone.prune.structured import remove_neurons
from bird_bone.prune.wanda import wanda_scores


@dataclass(frozen=True)
class Pruner:
    """One pruning method.

    ``statistics``: what the calibration pass collects for it: ``sq_norms`` (||X_j||^2), ``gram``
    (X^T X), ``clusters`` (mean |X| and activation patterns of MLP neurons, k-means clusters);
    empty: the method reads no calibration data. Exactly one of ``score``, ``solve`` and ``remove``:
    ``score(weight, statistics)`` is the importance of each weight (lowest pruned first, compared
    within ``scope``), ``solve(weights, hessian, sparsity, n, m, blocksize, percdamp, priors)``
    prunes weights that share one input and returns (weight, mask) each, ``remove`` cuts whole MLP
    neurons out of the model (see :func:`bird_bone.prune.structured.remove_neurons`).
    ``nm_true_sequential``: the order ``prune.true_sequential: auto`` takes for an N:M pattern.
    """

    statistics: frozenset[str] = frozenset()
    score: Callable[[torch.Tensor, object], torch.Tensor] | None = None
    scope: Literal["row", "layer"] = "row"
    solve: Callable | None = None
    remove: Callable | None = None
    nm_true_sequential: bool = True


PRUNERS: dict[str, Pruner] = {
    "magnitude": Pruner(score=lambda weight, _stats: magnitude_scores(weight), scope="layer"),
    # Wanda N:M takes the reference order (see bird_bone.prune.layerwise.auto_true_sequential)
    "wanda": Pruner(
        frozenset({"sq_norms"}),
        score=lambda weight, stats: wanda_scores(weight, stats.sq_norms),
        nm_true_sequential=False,
    ),
    "sparsegpt": Pruner(frozenset({"gram"}), solve=sparsegpt_prune_many),
    "structured": Pruner(frozenset({"clusters"}), remove=remove_neurons),
}


def pruner(method: str) -> Pruner:
    """The registry entry of ``method``; a clear error naming the known methods otherwise."""
    if method not in PRUNERS:
        raise ValueError(f"unknown pruning method '{method}' (choose from {', '.join(PRUNERS)})")
    return PRUNERS[method]
