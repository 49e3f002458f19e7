"""RigL regrowth: re-open the pruned connections whose gradient is largest, initialised at zero.

Evci et al. 2020 ("Rigging the Lottery"), sec. 3: connections are grown where |dL/dW| is largest,
since that is where a step of training would lower the loss the most; new connections start at zero
so the network's function is unchanged at the moment of growth. The gradient of the dense weight
tensor is taken on calibration batches; only pruned positions compete.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def pruned_gradients(
    model: nn.Module, windows: torch.Tensor, names: list[str], batch_size: int = 2
) -> dict[str, torch.Tensor]:
    """Sum over ``windows`` [N, L] of dL/dW (next-token cross-entropy) for the named modules."""
    params = {name: model.get_submodule(name).weight for name in names}
    flags = {name: p.requires_grad for name, p in model.named_parameters()}
    for p in model.parameters():
        p.requires_grad_(False)
    grads = {name: torch.zeros_like(w) for name, w in params.items()}
    try:
        for w in params.values():
            w.requires_grad_(True)
        for first in range(0, windows.shape[0], batch_size):
            batch = windows[first : first + batch_size].to(next(iter(params.values())).device)
            logits = model(input_ids=batch, use_cache=False).logits[:, :-1]
            loss = F.cross_entropy(logits.flatten(0, 1).float(), batch[:, 1:].flatten())
            found = torch.autograd.grad(loss, list(params.values()))
            for name, g in zip(params, found):
                grads[name] += g
    finally:
        for name, p in model.named_parameters():
            p.requires_grad_(flags[name])
    return grads


def regrow_masks(
    masks: dict[str, torch.Tensor], gradients: dict[str, torch.Tensor], max_fraction: float
) -> tuple[dict[str, torch.Tensor], dict[str, int]]:
    """Re-open, per layer, ``max_fraction`` of its pruned positions with the largest |gradient|.

    Returns the new masks (True = pruned) and the count re-opened per layer.
    """
    if not 0.0 <= max_fraction <= 1.0:
        raise ValueError(f"regrow max_fraction must be in [0, 1], got {max_fraction}")
    new_masks, regrown = {}, {}
    for name, mask in masks.items():
        count = int(max_fraction * int(mask.sum()))
        new = mask.clone()
        if count and name in gradients:
            score = gradients[name].abs().masked_fill(~mask.to(gradients[name].device), -1.0).flatten()
            new.view(-1)[torch.topk(score, count).indices.to(new.device)] = False
        new_masks[name], regrown[name] = new, int(mask.sum() - new.sum())
    return new_masks, regrown


def regrow(
    model: nn.Module,
    windows: torch.Tensor,
    masks: dict[str, torch.Tensor],
    max_fraction: float,
    batch_size: int = 2,
) -> tuple[dict[str, torch.Tensor], dict[str, int]]:
    """RigL growth step on ``model``'s masked linears; the re-opened weights are set to exactly zero."""
    names = [name for name in masks if isinstance(model.get_submodule(name), nn.Linear)]
    grads = pruned_gradients(model, windows, names, batch_size)
    new_masks, regrown = regrow_masks(masks, grads, max_fraction)
    with torch.no_grad():
        for name in names:
            weight = model.get_submodule(name).weight
            weight.masked_fill_(masks[name].to(weight.device), 0.0)  # zero init of the grown ones
    return new_masks, regrown
