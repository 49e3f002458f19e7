"""One pruning step over a whole model with any method of the registry: the one entry point that
the loop's waves and one-shot pruning share. Mask methods return cumulative masks; a method that
removes neurons (``structured``) cuts the MLPs and records which original neurons survive."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch
from torch import nn

from bird_bone.models.adapters import mlp_widths
from bird_bone.prune.layerwise import prune_layers
from bird_bone.prune.registry import pruner


@dataclass
class PruneStep:
    """What a step left: masks (True = pruned, by module name; those given stay for a method that
    removes neurons), the surviving neurons' original indices per MLP, and the wall time."""

    masks: dict[str, torch.Tensor] = field(default_factory=dict)
    kept: dict[str, torch.Tensor] = field(default_factory=dict)
    seconds: float = 0.0


def prune_step(
    model: nn.Module,
    method: str,
    amount: float,
    windows: torch.Tensor | None,
    masks: dict[str, torch.Tensor] | None = None,
    kept: dict[str, torch.Tensor] | None = None,
    *,
    batch_size: int = 4,
    seed: int = 0,
    **options,
) -> PruneStep:
    """Prune ``model`` in place by ``amount``, cumulative over steps: the sparsity of the decoder
    linears for a mask method, the fraction of MLP neurons removed for one that removes neurons.

    ``masks``/``kept``: what earlier steps left (earlier masks stay pruned). ``options``: the
    method's own keywords (:func:`bird_bone.prune.layerwise.prune_layers` or the registry entry's
    ``remove``), as ``PruneParams.options`` builds them. ``seed`` seeds k-means (neuron clusters).
    """
    entry, start = pruner(method), time.perf_counter()
    if entry.remove is not None:
        kept = entry.remove(model, windows, amount, seed=seed, batch_size=batch_size, kept=kept, **options)
        return PruneStep(dict(masks or {}), kept, time.perf_counter() - start)
    masks = prune_layers(model, method, amount, windows, prior_masks=masks, batch_size=batch_size, **options)
    return PruneStep(masks, dict(kept or {}), time.perf_counter() - start)


def neurons_removed(model: nn.Module) -> dict:
    """JSON-ready: each layer's MLP width and the fraction of the configured neurons removed."""
    widths = mlp_widths(model)
    return {"mlp_widths": widths, "neurons_removed": 1 - sum(widths) / (len(widths) * model.config.intermediate_size)}
