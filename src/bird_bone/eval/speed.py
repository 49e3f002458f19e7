"""Cost figures of a model: parameter count, bytes on disk, bits per weight, forward throughput."""

from __future__ import annotations

import os
import time
from pathlib import Path

import torch
from torch import nn


def parameter_count(model: nn.Module) -> dict[str, int]:
    """Unique parameters (tied embeddings counted once) and how many of them are non-zero."""
    seen: set[int] = set()
    total = nonzero = 0
    for p in model.parameters():
        if id(p) in seen:
            continue
        seen.add(id(p))
        total += p.numel()
        nonzero += int(torch.count_nonzero(p.detach()))
    return {"parameters": total, "nonzero_parameters": nonzero}


def bytes_on_disk(paths: list[str | os.PathLike]) -> int:
    """Total size of the given files, and of every file below the given directories."""
    total = 0
    for path in map(Path, paths):
        files = [path] if path.is_file() else [f for f in path.rglob("*") if f.is_file()]
        total += sum(f.stat().st_size for f in files)
    return total


def bits_per_weight(num_bytes: int, parameters: int) -> float:
    return 8.0 * num_bytes / parameters


@torch.inference_mode()
def forward_throughput(
    model: nn.Module, windows: torch.Tensor, batch_size: int = 4, batches: int = 2, logits_to_keep: int = 0
) -> dict:
    """Tokens per second of plain forward passes over ``windows`` [N, L], after one warm-up batch.

    ``logits_to_keep``: compute the LM head for the last that many positions only (1: prefill, as a
    generation's first step does); 0: every position (as perplexity needs)."""
    device = next(model.parameters()).device
    chunks = [windows[i : i + batch_size].to(device) for i in range(0, windows.shape[0], batch_size)]
    keep = {"logits_to_keep": logits_to_keep} if logits_to_keep else {}
    model(input_ids=chunks[0][:1, :8], use_cache=False, **keep)  # warm-up: allocator, kernels
    timed = chunks[:batches]
    start = time.perf_counter()
    for chunk in timed:
        model(input_ids=chunk, use_cache=False, **keep)
    seconds = time.perf_counter() - start
    tokens = sum(chunk.numel() for chunk in timed)
    return {"tokens_per_second": tokens / seconds, "tokens": tokens, "seconds": seconds, "batch_size": batch_size}
