"""Layer-wise mask pruning of a whole model: one pass over the decoder layers with a mask method
of the registry (magnitude, Wanda, SparseGPT).

A pass prunes every decoder-layer linear to a cumulative sparsity; weights pruned by earlier passes
stay pruned (their masks are passed in) and the pass returns the new masks. Embeddings and the LM
head are never touched unless asked: they are not decoder-layer linears.
"""

from __future__ import annotations

import logging
from typing import Literal

import torch
from torch import nn

from bird_bone.calibration.sequential import run_sequential, run_true_sequential
from bird_bone.models.adapters import (
    decoder_layers,
    input_embeddings,
    layer_prefix,
    linear_modules,
    prunable_linears,
)
from bird_bone.prune.magnitude import magnitude_scores
from bird_bone.prune.masks import apply_mask, check_nm, select_mask
from bird_bone.prune.registry import Pruner, pruner

log = logging.getLogger(__name__)


def check_pattern(model: nn.Module, n: int, m: int) -> None:
    """Fail before any work when an N:M pattern does not divide some layer's width."""
    if n or m:
        for name, module in prunable_linears(model).items():
            check_nm(n, m, module.in_features, name)


def _mask_group(modules, stats, method: Pruner, sparsity, n, m, priors, blocksize, percdamp) -> list[torch.Tensor]:
    """Prune linears that share one input (and so ``stats``) in place; their masks, in order."""
    weights = [module.weight.data for module in modules]
    if method.solve is not None:
        solved = method.solve(weights, stats.hessian, sparsity, n, m, blocksize, percdamp, priors)
        for weight, (new_weight, _) in zip(weights, solved):
            weight.copy_(new_weight)
        masks = [mask for _, mask in solved]
    else:
        masks = [select_mask(method.score(w, stats), sparsity, n, m, method.scope, p) for w, p in zip(weights, priors)]
    for weight, mask in zip(weights, masks):
        apply_mask(weight, mask)
    return masks


def check_request(model: nn.Module, method: str, n: int, m: int, true_sequential) -> tuple[Pruner, bool]:
    """The registry entry of a mask ``method`` and the calibration order to take, checked before any work."""
    entry = pruner(method)
    if entry.remove is not None:
        raise ValueError(f"pruning method '{method}' removes neurons, it makes no masks (see prune.step)")
    check_pattern(model, n, m)
    if true_sequential == "auto":
        return entry, auto_true_sequential(method, n, m)
    if not isinstance(true_sequential, bool):
        raise ValueError(f"true_sequential must be true, false or 'auto', got {true_sequential!r}")
    return entry, true_sequential


def mask_visitors(prefix: str, entry: Pruner, sparsity, n, m, prior_masks, blocksize, percdamp, masks: dict):
    """The (``visit_group``, ``visit``) callbacks of the true-sequential and reference-order drivers
    (``bird_bone.calibration.sequential``) for a mask method: each prunes what it is handed in
    place and records the masks in ``masks`` by full module name (``prefix``.index.name)."""

    def visit_group(index, modules, stats) -> None:
        names = [f"{prefix}.{index}.{name}" for name in modules]
        priors = [prior_masks.get(name) for name in names]
        group_masks = _mask_group(list(modules.values()), stats, entry, sparsity, n, m, priors, blocksize, percdamp)
        masks.update(zip(names, group_masks))

    def visit(index, layer, stats) -> bool:
        groups: dict[int, dict] = {}  # linears sharing one statistics object share their input
        for name, module in linear_modules(layer).items():
            groups.setdefault(id(stats.get(name)), {})[name] = module
        for group in groups.values():
            visit_group(index, group, stats.get(next(iter(group))))
        return True

    return visit_group, visit


def auto_true_sequential(method: str, n: int = 0, m: int = 0) -> bool:
    """The calibration order ``true_sequential="auto"`` picks: true-sequential (one forward per
    layer), except for Wanda with an N:M pattern, which takes the reference order.

    Measured on SmolLM2-135M (docs/benchmarks.md, 3 calibration seeds x 3 evaluation texts):
    true-sequential Wanda 2:4 was worse than the reference order in 8 of 9 cases, by up to 11 %;
    Wanda 50 %, SparseGPT 50 % and SparseGPT 2:4 landed within 5 % either way (3-6 cases each). Wanda
    never updates the weights it keeps, and 2:4 cuts half of every group of four, so scoring a
    layer's later linears on inputs already shifted by those cuts goes uncorrected; SparseGPT
    reconstructs each output on the inputs it sees. The registry holds the choice
    (``Pruner.nm_true_sequential``)."""
    return not (n and m) or pruner(method).nm_true_sequential


def prune_layers(
    model: nn.Module,
    method: str,
    sparsity: float,
    windows: torch.Tensor | None = None,
    n: int = 0,
    m: int = 0,
    prior_masks: dict[str, torch.Tensor] | None = None,
    blocksize: int = 128,
    percdamp: float = 0.01,
    batch_size: int = 4,
    include_embeddings: bool = False,
    true_sequential: bool | Literal["auto"] = False,
) -> dict[str, torch.Tensor]:
    """Prune ``model`` in place to ``sparsity`` (or N:M); returns masks by full module name (weights).

    ``true_sequential``: prune each group of linears sharing an input as soon as that input is known
    over all windows, so later linears of a layer are calibrated on the already-pruned earlier ones
    (GPTQ's option of that name): one forward per layer instead of about 1.8, in chunks of
    ``batch_size`` windows that all reach a group before it is pruned. Off: the reference order,
    every linear of a layer calibrated on the dense layer's inputs, in batches of ``batch_size``.
    ``"auto"``: the order :func:`auto_true_sequential` picks for ``method`` and the pattern.
    ``include_embeddings``: also prune the input embeddings (by magnitude, per token row; with
    tied weights this prunes the LM head too). Off by default: they stay dense.
    """
    entry, true_sequential = check_request(model, method, n, m, true_sequential)
    prior_masks = prior_masks or {}
    masks: dict[str, torch.Tensor] = {}
    visit_group, visit = mask_visitors(
        layer_prefix(model), entry, sparsity, n, m, prior_masks, blocksize, percdamp, masks
    )
    if include_embeddings:
        name, embedding = input_embeddings(model)
        masks[name] = select_mask(
            magnitude_scores(embedding.weight), sparsity, scope="row", pruned=prior_masks.get(name)
        )
        apply_mask(embedding.weight.data, masks[name])
    gram = "gram" in entry.statistics
    if not entry.statistics:  # e.g. magnitude: needs no calibration data
        for index, layer in enumerate(decoder_layers(model)):
            for name, module in linear_modules(layer).items():
                visit_group(index, {name: module}, None)
    elif windows is None:
        raise ValueError(f"method '{method}' needs calibration windows")
    elif true_sequential:
        run_true_sequential(model, windows, visit_group, gram=gram, batch_size=batch_size)
    else:
        run_sequential(model, windows, visit, batch_size=batch_size, gram=gram, abs_values=False)
    log.info("%s pass to %s: sparsity %.4f", method, f"{n}:{m}" if n else f"{sparsity:.3f}", mask_sparsity(masks))
    return masks


def mask_sparsity(masks: dict[str, torch.Tensor]) -> float:
    total = sum(mask.numel() for mask in masks.values())
    return sum(int(mask.sum()) for mask in masks.values()) / total if total else 0.0


def sparsity_summary(masks: dict[str, torch.Tensor]) -> dict:
    """JSON-ready: overall and per-layer fraction of pruned weights."""
    layers = {name: int(mask.sum()) / mask.numel() for name, mask in masks.items()}
    return {
        "sparsity": mask_sparsity(masks),
        "layers": layers,
        "pruned_weights": sum(int(m.sum()) for m in masks.values()),
    }
