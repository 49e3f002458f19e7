"""Tokenize text once and cut it into token windows for evaluation and calibration."""

from __future__ import annotations

import random

import torch

from bird_bone.errors import TextLoadError


def tokenize_text(tokenizer, text: str) -> torch.Tensor:
    """The whole text as one 1-D LongTensor of token ids, tokenized once, no BOS/EOS added."""
    ids = tokenizer(text, add_special_tokens=False, return_attention_mask=False, verbose=False)["input_ids"]
    return torch.tensor(ids, dtype=torch.long)


def evaluation_windows(
    tokens: torch.Tensor, window_length: int, windows: int | None, name: str = "text"
) -> torch.Tensor:
    """The first ``windows`` non-overlapping windows, shape [windows, window_length].

    ``windows=None`` takes every complete window. The protocol of the pruning papers.
    """
    available = tokens.numel() // window_length
    if available == 0 or (windows is not None and windows > available):
        raise TextLoadError(
            f"{name} has {tokens.numel()} tokens: too short for "
            f"{windows if windows is not None else 1} windows of {window_length}"
        )
    count = available if windows is None else windows
    return tokens[: count * window_length].view(count, window_length)


def calibration_windows(
    tokens: torch.Tensor, window_length: int, windows: int, seed: int, name: str = "text"
) -> torch.Tensor:
    """``windows`` random windows, shape [windows, window_length], drawn as the Wanda/SparseGPT
    code draws them: ``random.seed(seed)``, then ``i = randint(0, n - window_length - 1)`` each."""
    n = tokens.numel()
    if windows < 1:
        raise TextLoadError(f"calibration needs at least 1 window, got {windows}")
    if n < windows * window_length + 1:
        raise TextLoadError(f"{name} has {n} tokens: too short for {windows} calibration windows of {window_length}")
    rng = random.Random(seed)
    starts = [rng.randint(0, n - window_length - 1) for _ in range(windows)]
    return torch.stack([tokens[i : i + window_length] for i in starts])
