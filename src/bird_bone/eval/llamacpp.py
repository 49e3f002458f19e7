"""Evaluation in llama.cpp (llama-cpp-python): logits, perplexity on the same token windows as
``bird_bone.eval.perplexity``, and tokens/s, of a GGUF file.

Windows are fed as token ids (no re-tokenization), each window on its own from an empty cache, and
scored as ``perplexity`` scores them: tokens 2..L from their prefixes. The context is made for exact
comparison with transformers: F32 KV cache, no flash attention, every position's logits kept.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np
import torch

from bird_bone.errors import ModelLoadError
from bird_bone.eval.perplexity import PerplexityResult


def load_llama(path: str | Path, n_ctx: int = 512, threads: int | None = None, logits_all: bool = True):
    """A llama.cpp model + context on CPU for GGUF ``path``, set up for exact comparisons."""
    import llama_cpp

    if not Path(path).is_file():
        raise ModelLoadError(f"GGUF file not found: {path}")
    try:
        return llama_cpp.Llama(
            model_path=str(path),
            n_ctx=n_ctx,
            n_batch=n_ctx,
            n_ubatch=n_ctx,
            n_threads=threads,
            n_threads_batch=threads,
            logits_all=logits_all,
            flash_attn=False,
            type_k=llama_cpp.GGML_TYPE_F32,
            type_v=llama_cpp.GGML_TYPE_F32,
            n_gpu_layers=0,
            verbose=False,
        )
    except ValueError as exc:  # llama-cpp-python's "Failed to load model from file"
        raise ModelLoadError(f"llama.cpp could not load {path}: {exc}") from exc


def llama_logits(llm, tokens: torch.Tensor | list[int]) -> np.ndarray:
    """Logits [L, vocab] (float32) of every position of one sequence, from an empty cache."""
    ids = [int(t) for t in tokens]
    if len(ids) > llm.n_ctx():
        raise ValueError(f"{len(ids)} tokens do not fit the llama.cpp context of {llm.n_ctx()}")
    llm.reset()
    llm.eval(ids)
    return np.array(llm.scores[: len(ids)], dtype=np.float32)


def _window_nll(logits: np.ndarray, window: list[int]) -> float:
    """Summed NLL of tokens 2..L of ``window`` under ``logits`` [L, V], in float64."""
    x = logits[:-1].astype(np.float64)
    top = x.max(axis=1, keepdims=True)
    log_z = top[:, 0] + np.log(np.exp(x - top).sum(axis=1))
    return float((log_z - x[np.arange(len(window) - 1), window[1:]]).sum())


def llama_perplexity(path: str | Path, windows: torch.Tensor, threads: int | None = None) -> PerplexityResult:
    """Perplexity of GGUF ``path`` on ``windows`` [N, L], in llama.cpp (see module docstring)."""
    if windows.ndim != 2 or windows.shape[1] < 2:
        raise ValueError(f"windows must be [N, L] with L >= 2, got shape {tuple(windows.shape)}")
    llm = load_llama(path, n_ctx=windows.shape[1], threads=threads)
    start, total = time.perf_counter(), 0.0
    try:
        for window in windows.tolist():
            total += _window_nll(llama_logits(llm, window), window)
    finally:
        llm.close()
    predicted = windows.shape[0] * (windows.shape[1] - 1)
    return PerplexityResult(
        perplexity=math.exp(total / predicted),
        nll=total,
        predicted_tokens=predicted,
        windows=windows.shape[0],
        window_length=windows.shape[1],
        seconds=time.perf_counter() - start,
    )


def llama_throughput(path: str | Path, tokens: torch.Tensor, decode_tokens: int = 32, threads: int | None = None):
    """Tokens/s of GGUF ``path``: prompt processing of ``tokens`` [L] in one batch, then decoding
    ``decode_tokens`` more one at a time (the next tokens of the same text, so no sampler is timed)."""
    ids = [int(t) for t in tokens]
    prompt, follow = ids[: len(ids) - decode_tokens], ids[len(ids) - decode_tokens :]
    if not prompt or not follow:
        raise ValueError(f"need more than {decode_tokens} tokens to time prompt and decoding, got {len(ids)}")
    llm = load_llama(path, n_ctx=len(ids), threads=threads, logits_all=False)
    try:
        llm.reset()
        start = time.perf_counter()
        llm.eval(prompt)
        prompt_s = time.perf_counter() - start
        start = time.perf_counter()
        for token in follow:
            llm.eval([token])
        decode_s = time.perf_counter() - start
    finally:
        llm.close()
    return {
        "prompt_tokens": len(prompt),
        "prompt_tokens_per_s": len(prompt) / prompt_s,
        "decode_tokens": len(follow),
        "decode_tokens_per_s": len(follow) / decode_s,
    }


def throughput(path: str | Path, prompt_tokens: int = 256, gen_tokens: int = 32, threads: int | None = None) -> dict:
    """Tokens/s of GGUF ``path`` in llama.cpp: prompt processing of ``prompt_tokens`` in one batch,
    then generation of ``gen_tokens`` one at a time (:func:`llama_throughput`), as llama-bench does
    on token ids drawn at random (seed 0) from the file's vocabulary, so any two files compare on
    the same work. Also the file's bytes and the threads used."""
    if prompt_tokens < 1 or gen_tokens < 1:
        raise ValueError(f"need prompt_tokens >= 1 and gen_tokens >= 1, got {prompt_tokens} and {gen_tokens}")
    llm = load_llama(path, n_ctx=8, threads=threads, logits_all=False)
    try:
        vocab = llm.n_vocab()
    finally:
        llm.close()
    ids = torch.randint(vocab, (prompt_tokens + gen_tokens,), generator=torch.Generator().manual_seed(0))
    speed = llama_throughput(path, ids, gen_tokens, threads)
    return {**speed, "bytes": Path(path).stat().st_size, "threads": threads or 0}
