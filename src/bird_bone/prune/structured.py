"""Cluster-aware structured pruning of MLP neurons ("BAP", the product's biophase pruning).

Neurons of each layer's MLP are grouped by k-means on their activation patterns (normalised
activations over a fixed sample of calibration tokens), each neuron is valued by its expected
contribution mean|a_j| * ||W_down[:, j]||_2, and every wave removes the lowest-valued neurons,
at most ``max_fraction_per_cluster`` of any one cluster, so no functional group is wiped out.
Removed neurons are cut out of gate/up (rows) and down (columns): the model gets smaller and
faster, not just sparser. The neuron values and k-means clusters (scikit-learn's) are in
:mod:`bird_bone.calibration.neurons`, which activation logging shares.
"""

from __future__ import annotations

import logging
import math

import torch
from torch import nn

from bird_bone.calibration.neurons import cluster_neurons, neuron_values
from bird_bone.calibration.sequential import run_sequential
from bird_bone.models.adapters import down_projection, keep_neurons, layer_prefix, mlp_width

log = logging.getLogger(__name__)


def select_neurons(values: torch.Tensor, cluster_ids: torch.Tensor, count: int, max_fraction_per_cluster: float):
    """Indices of the ``count`` lowest-valued neurons (fewer if the per-cluster caps bind)."""
    caps = {int(c): math.floor(max_fraction_per_cluster * int((cluster_ids == c).sum())) for c in cluster_ids.unique()}
    removed: list[int] = []
    for j in torch.argsort(values, stable=True).tolist():
        if len(removed) == count:
            break
        c = int(cluster_ids[j])
        if caps[c] > 0:
            caps[c] -= 1
            removed.append(j)
    return torch.tensor(sorted(removed), dtype=torch.long)


def check_wave(fraction: float, width_multiple: int) -> None:
    """Fail before any work on a fraction outside [0, 1) or a width multiple under 1."""
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"fraction of neurons must be in [0, 1), got {fraction}")
    if width_multiple < 1:
        raise ValueError(f"width_multiple must be >= 1, got {width_multiple}")


def cut_layer(layer, down_stats, target: int, width_multiple, max_fraction_per_cluster, clusters, seed) -> torch.Tensor:
    """Cut one layer's MLP towards ``target`` neurons from its down projection's input statistics;
    returns which of its current neurons survive (bool)."""
    width = mlp_width(layer)
    count = max(0, width - target // width_multiple * width_multiple)
    values = neuron_values(down_projection(layer).weight, down_stats.abs_mean)
    ids = cluster_neurons(down_stats.patterns(), clusters, seed)
    removed = select_neurons(values, ids, count, max_fraction_per_cluster)
    survivors = torch.ones(width, dtype=torch.bool)
    survivors[removed] = False
    keep_neurons(layer, survivors.nonzero().squeeze(1))
    return survivors


def remove_neurons(
    model: nn.Module,
    windows: torch.Tensor,
    fraction: float,
    max_fraction_per_cluster: float = 0.1,
    clusters: int = 8,
    pattern_tokens: int = 256,
    seed: int = 0,
    batch_size: int = 8,
    kept: dict[str, torch.Tensor] | None = None,
    width_multiple: int = 1,
) -> dict[str, torch.Tensor]:
    """One wave: cut each layer's MLP down towards ``fraction`` of its original neurons removed
    (cumulative over waves), taking at most ``max_fraction_per_cluster`` of any cluster this wave.

    ``kept`` maps layer names to the original indices of their surviving neurons (from earlier
    waves); the updated map is returned, so the cut is recorded and reversible.
    ``width_multiple``: round each kept width down to a multiple of this (e.g. 64: GEMM kernels run
    faster on even widths than on 1229), as far as the per-cluster caps allow.
    """
    check_wave(fraction, width_multiple)
    prefix, kept = layer_prefix(model), dict(kept or {})
    target = model.config.intermediate_size - round(model.config.intermediate_size * fraction)

    def visit(index, layer, stats) -> bool:
        name = f"{prefix}.{index}.mlp"
        original = kept.get(name, torch.arange(mlp_width(layer)))
        survivors = cut_layer(layer, stats["mlp.down_proj"], target, width_multiple, max_fraction_per_cluster,
                              clusters, seed)  # fmt: skip
        kept[name] = original[survivors]
        return not bool(survivors.all())

    run_sequential(model, windows, visit, batch_size, pattern_tokens={"mlp.down_proj": pattern_tokens})
    log.info("structured wave: MLP widths now %s", sorted({len(v) for v in kept.values()}))
    return kept
