"""Layer-wise mask pruning of a model larger than memory: streamed from disk, resumable.

The same pass as :func:`bird_bone.prune.layerwise.prune_layers` (same registry entries, visitors
and per-layer calibration steps of ``bird_bone.calibration.sequential``), run by the streamed layer
loop of ``bird_bone.calibration.streamed`` (one layer in memory; resumable at the last finished
layer): each decoder layer is calibrated, pruned and run forward, written as its own shard of a
Hugging Face checkpoint in the source dtype, its masks likewise (``masks/``, safetensors).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch

from bird_bone.calibration.sequential import linear_groups, sequential_layer, true_sequential_layer
from bird_bone.calibration.streamed import StreamCalibration, StreamPlan, stream_layers, windows_digest
from bird_bone.io.tensors import save_tensors
from bird_bone.models.adapters import linear_modules
from bird_bone.models.streaming import StreamedCheckpoint
from bird_bone.prune.layerwise import check_request, mask_visitors


def _settings(reader, method, sparsity, windows, n, m, blocksize, percdamp, batch_size, true_sequential) -> dict:
    return {
        "source": str(reader.directory.resolve()),
        "method": method,
        "sparsity": sparsity,
        "n": n,
        "m": m,
        "blocksize": blocksize,
        "percdamp": percdamp,
        "batch_size": batch_size,
        "true_sequential": true_sequential,
        "windows": windows_digest(windows),
    }


@torch.no_grad()
def stream_prune(
    source: str | Path,
    out: str | Path,
    method: str,
    sparsity: float,
    windows: torch.Tensor | None = None,
    n: int = 0,
    m: int = 0,
    blocksize: int = 128,
    percdamp: float = 0.01,
    batch_size: int = 4,
    true_sequential: bool | str = False,
    on_layer: Callable[[int], None] | None = None,
) -> dict:
    """Prune the checkpoint in ``source`` layer by layer into the checkpoint ``out`` (masks in
    ``out/masks``); arguments as :func:`bird_bone.prune.layerwise.prune_layers`. ``on_layer(i)``
    is called once layer i is written. Returns the summary of the pruned weights."""
    reader = StreamedCheckpoint(source)
    entry, true_sequential = check_request(reader.model, method, n, m, true_sequential)
    if entry.statistics and windows is None:
        raise ValueError(f"method '{method}' needs calibration windows")
    out, count = Path(out), len(reader.layers)
    settings = _settings(reader, method, sparsity, windows, n, m, blocksize, percdamp, batch_size, true_sequential)
    masks: dict[str, torch.Tensor] = {}
    visitors = mask_visitors(reader.prefix, entry, sparsity, n, m, {}, blocksize, percdamp, masks)
    gram = "gram" in entry.statistics

    def step(index, layer, state, shard) -> dict:
        _prune_layer(index, layer, state, visitors, gram, batch_size, index == count - 1)
        return _save_masks(out / "masks", shard, masks)

    windows = windows if entry.statistics else None
    plan = StreamPlan(step, settings, windows, batch_size, true_sequential)
    return _summary(stream_layers(reader, out, plan, on_layer)["records"])


def _prune_layer(index, layer, state: StreamCalibration | None, visitors, gram: bool, batch_size: int, last) -> None:
    """Calibrate and prune one loaded layer; ``state.hidden`` becomes its outputs (the next layer's inputs)."""
    visit_group, visit = visitors
    if state is None:  # e.g. magnitude: no calibration data
        for name, module in linear_modules(layer).items():
            visit_group(index, {name: module}, None)
    elif state.probe is not None:
        if state.groups is None:  # the same in every layer (the driver checks): found on the first one run
            state.groups = linear_groups(layer, *state.probe)
        (hidden,) = state.hidden
        out = true_sequential_layer(
            index, layer, hidden, state.kwargs[0][index], state.groups, visit_group, gram, batch_size, last
        )
        state.hidden = [out]
    else:
        kwargs = state.layer_kwargs(index)
        state.hidden = sequential_layer(index, layer, state.hidden, kwargs, visit, gram, None, True, False, last)


def _save_masks(directory: Path, shard: str, masks: dict[str, torch.Tensor]) -> dict[str, list[int]]:
    """Write (and drop) the masks gathered for one layer; their pruned and total counts by name."""
    save_tensors(masks, directory / shard)
    counts = {name: [int(mask.sum()), mask.numel()] for name, mask in masks.items()}
    masks.clear()
    return counts


def _summary(pruned: dict[str, list[int]]) -> dict:
    """JSON-ready, as :func:`bird_bone.prune.layerwise.sparsity_summary`."""
    total = sum(t for _, t in pruned.values())
    count = sum(p for p, _ in pruned.values())
    return {
        "sparsity": count / total if total else 0.0,
        "layers": {name: p / t for name, (p, t) in pruned.items()},
        "pruned_weights": count,
    }
