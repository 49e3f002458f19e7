"""One call that measures a model the same way at every stage: quality (perplexity) and cost
(parameters, sparsity, bytes on disk, bits per weight, forward tokens/s)."""

from __future__ import annotations

import os

import torch
from torch import nn

from bird_bone.eval.perplexity import perplexity
from bird_bone.eval.speed import bits_per_weight, bytes_on_disk, forward_throughput, parameter_count


def measure_model(
    model: nn.Module,
    windows: torch.Tensor,
    batch_size: int = 4,
    throughput_batches: int = 2,
    files: list[str | os.PathLike] | None = None,
) -> dict:
    """Flat dict of metrics; ``files`` are the artifacts whose size counts as the model's size."""
    counts = parameter_count(model)
    ppl = perplexity(model, windows, batch_size=batch_size)
    speed = forward_throughput(model, windows, batch_size=batch_size, batches=throughput_batches)
    metrics = {
        "perplexity": ppl.perplexity,
        "nll": ppl.nll,
        "eval_windows": ppl.windows,
        "eval_window_length": ppl.window_length,
        "eval_predicted_tokens": ppl.predicted_tokens,
        "eval_seconds": ppl.seconds,
        "tokens_per_second": speed["tokens_per_second"],
        **counts,
        "sparsity": 1.0 - counts["nonzero_parameters"] / counts["parameters"],
    }
    if files:
        size = bytes_on_disk(files)
        metrics["bytes_on_disk"] = size
        metrics["bits_per_weight"] = bits_per_weight(size, counts["parameters"])
    return metrics
