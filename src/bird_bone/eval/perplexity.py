"""Perplexity over token windows: exp(total NLL / total predicted tokens).

Each window is scored on its own (no context carried across windows), predicting tokens 2..L
from their prefixes, the protocol of the SparseGPT/Wanda/GPTQ evaluation code.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm


@dataclass
class PerplexityResult:
    perplexity: float
    nll: float  # total negative log-likelihood, nats
    predicted_tokens: int
    windows: int
    window_length: int
    seconds: float

    def to_dict(self) -> dict:
        return asdict(self)


def window_nll(model: nn.Module, batch: torch.Tensor) -> torch.Tensor:
    """Summed NLL of each window in ``batch`` [B, L] -> [B], logits upcast to float32."""
    logits = model(input_ids=batch, use_cache=False).logits  # [B, L, V]
    targets = batch[:, 1:].to(logits.device)
    return torch.stack(
        [F.cross_entropy(logits[i, :-1].float(), targets[i], reduction="sum") for i in range(batch.shape[0])]
    )


@torch.inference_mode()
def perplexity(model: nn.Module, windows: torch.Tensor, batch_size: int = 4, progress: bool = True) -> PerplexityResult:
    """Perplexity of ``model`` on ``windows`` [N, L] (see module docstring)."""
    if windows.ndim != 2 or windows.shape[1] < 2:
        raise ValueError(f"windows must be [N, L] with L >= 2, got shape {tuple(windows.shape)}")
    device = next(model.parameters()).device
    start = time.perf_counter()
    total = 0.0
    batches = range(0, windows.shape[0], batch_size)
    for first in tqdm(batches, desc="perplexity", unit="batch", disable=not progress):
        total += window_nll(model, windows[first : first + batch_size].to(device)).sum().item()
    predicted = windows.shape[0] * (windows.shape[1] - 1)
    return PerplexityResult(
        perplexity=math.exp(total / predicted),
        nll=total,
        predicted_tokens=predicted,
        windows=windows.shape[0],
        window_length=windows.shape[1],
        seconds=time.perf_counter() - start,
    )
