"""Activation logging of a model larger than memory: streamed from disk, resumable.

The statistics of :func:`bird_bone.calibration.activations.log_activations` (same keys, same
per-layer function ``layer_statistics``, same reference calibration order), gathered by the
streamed layer loop of ``bird_bone.calibration.streamed``: each decoder layer is loaded, its
statistics written to ``<out>/<layer shard>.safetensors`` (one file a layer: with Gram matrices a
3B model's statistics are several GB), and freed. The model is not changed and no checkpoint is
written. :func:`load_statistics` reads them back whole (for a model whose statistics fit memory).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch

from bird_bone.calibration.activations import layer_statistics, statistics_patterns
from bird_bone.calibration.sequential import sequential_layer
from bird_bone.calibration.streamed import StreamPlan, stream_layers, windows_digest
from bird_bone.io.tensors import load_tensors, save_tensors
from bird_bone.models.streaming import StreamedCheckpoint


@torch.no_grad()
def stream_activations(
    source: str | Path,
    out: str | Path,
    windows: torch.Tensor,
    batch_size: int = 8,
    gram: bool = False,
    clusters: int = 8,
    pattern_tokens: int = 256,
    seed: int = 0,
    on_layer: Callable[[int], None] | None = None,
) -> dict:
    """Log the statistics of the checkpoint ``source`` layer by layer into the directory ``out``;
    arguments as :func:`bird_bone.calibration.activations.log_activations`. Returns a summary:
    the tokens seen and the statistics' names by layer file."""
    if windows is None:
        raise ValueError("activation logging needs calibration windows")
    reader = StreamedCheckpoint(source)
    out, count = Path(out), len(reader.layers)
    settings = {
        "source": str(reader.directory.resolve()), "method": "activations", "batch_size": batch_size,
        "gram": gram, "clusters": clusters, "pattern_tokens": pattern_tokens, "seed": seed,
        "windows": windows_digest(windows),
    }  # fmt: skip
    patterns = statistics_patterns(clusters, pattern_tokens)

    def step(index, layer, state, shard) -> dict:
        found = {}

        def visit(_index, layer, stats) -> bool:
            found.update(layer_statistics(f"{reader.prefix}.{index}", layer, stats, gram, clusters, seed))
            return False

        kwargs = state.layer_kwargs(index)
        state.hidden = sequential_layer(index, layer, state.hidden, kwargs, visit, gram, patterns, False, True,
                                        index == count - 1)  # fmt: skip
        save_tensors(found, out / shard)
        return {shard: sorted(found)}

    plan = StreamPlan(step, settings, windows, batch_size, write_layers=False)
    records = stream_layers(reader, out, plan, on_layer)["records"]
    return {"tokens": int(windows.numel()), "files": records}


def load_statistics(out: str | Path) -> dict[str, torch.Tensor]:
    """Every statistic of a finished :func:`stream_activations` output ``out``, in one dict."""
    stats: dict[str, torch.Tensor] = {}
    for path in sorted(Path(out).glob("*.safetensors")):
        stats.update(load_tensors(path))
    return stats
