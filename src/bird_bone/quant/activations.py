"""Per-input-column activation energy E[x_j^2] of chosen linear layers, from calibration windows.

NOVAQ's optional activation-aware weighting uses it: scaling column j by sqrt(E[x_j^2]) before
k-means makes plain squared error equal the output error sum_j E[x_j^2] (w_j - q_j)^2 (the diagonal
of GPTQ's Hessian). A forward hook per layer; twenty lines, so written here.
"""

from __future__ import annotations

import torch
from torch import nn
from tqdm.auto import tqdm


@torch.no_grad()
def input_second_moments(
    model: nn.Module, windows: torch.Tensor, weight_names: list[str], batch_size: int = 1, progress: bool = True
) -> dict[str, torch.Tensor]:
    """Mean x_j^2 over every calibration token, per input column, for each ``<module>.weight`` named."""
    sums: dict[str, torch.Tensor] = {}
    counts: dict[str, int] = {}
    handles = []
    for name in weight_names:
        module = model.get_submodule(name.removesuffix(".weight"))
        if not isinstance(module, nn.Linear):
            continue

        def hook(_mod, inputs, _out, key=name):
            x = inputs[0].detach().reshape(-1, inputs[0].shape[-1]).float()
            sums[key] = sums.get(key, 0) + x.pow(2).sum(0)
            counts[key] = counts.get(key, 0) + x.shape[0]

        handles.append(module.register_forward_hook(hook))
    try:
        for start in tqdm(range(0, windows.shape[0], batch_size), desc="activations", disable=not progress):
            model(input_ids=windows[start : start + batch_size], use_cache=False)
    finally:
        for handle in handles:
            handle.remove()
    return {name: sums[name] / counts[name] for name in sums}
