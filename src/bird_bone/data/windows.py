"""Tokenize text once and cut it into token windows for evaluation and calibration.

Every window starts the way the model expects a sequence to start: where the tokenizer adds a BOS
token (Gemma, Llama 2/3), the first token of each window is replaced by BOS, as llama.cpp's
perplexity tool does; where it adds none (SmolLM2, Qwen), the windows are the plain token stream.
Windows keep their length and positions either way, so SmolLM2's windows are unchanged."""

from __future__ import annotations

import random

import torch

from bird_bone.errors import TextLoadError


def tokenize_text(tokenizer, text: str) -> torch.Tensor:
    """The whole text as one 1-D LongTensor of token ids, tokenized once, no BOS/EOS added."""
    ids = tokenizer(text, add_special_tokens=False, return_attention_mask=False, verbose=False)["input_ids"]
    return torch.tensor(ids, dtype=torch.long)


def bos_token(tokenizer) -> int | None:
    """The BOS id the tokenizer puts before a sequence, or None where it adds none."""
    bos = getattr(tokenizer, "bos_token_id", None)
    if bos is None:
        return None
    ids = tokenizer("a", add_special_tokens=True, verbose=False)["input_ids"]
    return int(bos) if ids[:1] == [bos] else None


def window_convention(tokenizer) -> str:
    """How windows start for this tokenizer, for reports."""
    bos = bos_token(tokenizer)
    return "no BOS (the tokenizer adds none)" if bos is None else f"BOS ({bos}) as the first token of every window"


def with_bos(windows: torch.Tensor, bos: int | None) -> torch.Tensor:
    """``windows`` [N, L] with their first token replaced by ``bos`` (unchanged when None)."""
    if bos is None:
        return windows
    windows = windows.clone()
    windows[:, 0] = bos
    return windows


def evaluation_windows(
    tokens: torch.Tensor, window_length: int, windows: int | None, name: str = "text", bos: int | None = None
) -> torch.Tensor:
    """The first ``windows`` non-overlapping windows, shape [windows, window_length], each starting
    with ``bos`` when given (see module docstring).

    ``windows=None`` takes every complete window. The protocol of the pruning papers.
    """
    available = tokens.numel() // window_length
    if available == 0 or (windows is not None and windows > available):
        raise TextLoadError(
            f"{name} has {tokens.numel()} tokens: too short for "
            f"{windows if windows is not None else 1} windows of {window_length}"
        )
    count = available if windows is None else windows
    return with_bos(tokens[: count * window_length].view(count, window_length), bos)


def calibration_windows(
    tokens: torch.Tensor, window_length: int, windows: int, seed: int, name: str = "text", bos: int | None = None
) -> torch.Tensor:
    """``windows`` random windows, shape [windows, window_length], drawn as the Wanda/SparseGPT
    code draws them: ``random.seed(seed)``, then ``i = randint(0, n - window_length - 1)`` each;
    each starting with ``bos`` when given (see module docstring)."""
    n = tokens.numel()
    if windows < 1:
        raise TextLoadError(f"calibration needs at least 1 window, got {windows}")
    if n < windows * window_length + 1:
        raise TextLoadError(f"{name} has {n} tokens: too short for {windows} calibration windows of {window_length}")
    rng = random.Random(seed)
    starts = [rng.randint(0, n - window_length - 1) for _ in range(windows)]
    return with_bos(torch.stack([tokens[i : i + window_length] for i in starts]), bos)
