"""Layer-wise mask pruning of a model larger than memory: streamed from disk, resumable.

The same pass as :func:`bird_bone.prune.layerwise.prune_layers` (same registry entries, visitors
and per-layer calibration steps of ``bird_bone.calibration.sequential``), but the model is never
whole in memory: the embedding is loaded to compute the calibration windows' inputs of layer 0 and
freed, then each decoder layer is loaded in float32, calibrated, pruned and run forward, written
as its own shard of a Hugging Face checkpoint in the source dtype (its masks likewise, as
safetensors) and freed. Peak memory: one layer in float32, its statistics, and the hidden states
of the calibration windows.

Resume: after each layer, the hidden states entering the next layer are saved
(``.stream/hidden-<i>.safetensors``), then ``.stream/progress.json`` is replaced to name that layer,
both atomically. A restarted run with the same settings starts at the layer named there; the saved
states make its result identical to an uninterrupted run's. Saving them rather than recomputing
them from the finished shards costs windows x tokens x hidden floats on disk (6 MB for 4 x 128
tokens of a 3B model) and spares a restart a forward pass through every finished layer.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm

from bird_bone.calibration.sequential import (
    capture_layer_inputs,
    linear_groups,
    sequential_layer,
    true_sequential_layer,
)
from bird_bone.errors import ArtifactError
from bird_bone.io.atomic import atomic_write_text
from bird_bone.io.sharded import ShardWriter
from bird_bone.io.tensors import load_tensors, save_tensors
from bird_bone.models.adapters import input_embeddings, linear_modules
from bird_bone.models.streaming import StreamedCheckpoint
from bird_bone.prune.layerwise import check_request, mask_visitors

log = logging.getLogger(__name__)


class Progress:
    """``progress.json`` (the layers finished, pruned counts) and the hidden states entering the next layer."""

    def __init__(self, directory: Path, settings: dict):
        self.directory = directory
        self.path = directory / "progress.json"
        if self.path.is_file():
            self.data = json.loads(self.path.read_text(encoding="utf-8"))
            differ = sorted(
                k for k in {*settings, *self.data["settings"]} if settings.get(k) != self.data["settings"].get(k)
            )
            if differ:
                raise ArtifactError(
                    f"{self.path}: written by a run with other settings ({', '.join(differ)}); "
                    "repeat them or remove the output directory"
                )
        else:
            self.data = {"settings": settings, "done": 0, "pruned": {}, "complete": False}

    @property
    def done(self) -> int:
        return self.data["done"]

    def hidden(self) -> list[torch.Tensor]:
        tensors = load_tensors(self._hidden_path(self.done))
        return [tensors[f"hidden.{i}"] for i in range(len(tensors))]

    def _hidden_path(self, layer: int) -> Path:
        return self.directory / f"hidden-{layer:05d}.safetensors"

    def save(self, done: int, hidden: list[torch.Tensor] | None, pruned: dict, complete: bool = False) -> None:
        if hidden is not None:
            save_tensors({f"hidden.{i}": h for i, h in enumerate(hidden)}, self._hidden_path(done))
        previous = self.done
        self.data.update(done=done, complete=complete)
        self.data["pruned"].update(pruned)
        atomic_write_text(self.path, json.dumps(self.data, indent=1) + "\n")
        if previous != done:
            self._hidden_path(previous).unlink(missing_ok=True)


@dataclass
class _Calibration:
    hidden: list[torch.Tensor]  # states entering the current layer: one per batch (one in all when true-sequential)
    kwargs: list  # per batch, per layer: the keyword arguments the model passes each layer
    probe: tuple | None  # true-sequential: one window's layer inputs, to find the linear groups
    groups: list | None = None


@torch.no_grad()
def _calibration(reader: StreamedCheckpoint, windows, batch_size: int, true_sequential: bool) -> _Calibration:
    """The windows' hidden states entering layer 0 and every layer's arguments (embedding loaded, then freed)."""
    name, embedding = input_embeddings(reader.model)
    reader.load(embedding, name)
    try:
        if not true_sequential:
            hidden, kwargs = capture_layer_inputs(reader.model, windows, batch_size, every_layer=True)
            return _Calibration(hidden, kwargs, None)
        probe_hidden, probe_kwargs = capture_layer_inputs(reader.model, windows[:1], 1)
        hidden, kwargs = capture_layer_inputs(reader.model, windows, windows.shape[0], every_layer=True)
        return _Calibration(hidden, kwargs, (probe_hidden[0], probe_kwargs[0]))
    finally:
        reader.free(embedding)


def _settings(reader, method, sparsity, windows, n, m, blocksize, percdamp, batch_size, true_sequential) -> dict:
    digest = None if windows is None else hashlib.sha256(windows.to(torch.int64).numpy().tobytes()).hexdigest()
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
        "windows": digest,
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
    is called once layer i is written. Returns the summary also kept in ``out/.stream/progress.json``."""
    reader = StreamedCheckpoint(source)
    entry, true_sequential = check_request(reader.model, method, n, m, true_sequential)
    if entry.statistics and windows is None:
        raise ValueError(f"method '{method}' needs calibration windows")
    out = Path(out)
    settings = _settings(reader, method, sparsity, windows, n, m, blocksize, percdamp, batch_size, true_sequential)
    progress = Progress(out / ".stream", settings)
    count = len(reader.layers)
    writer = ShardWriter(out, count + 1)
    if not progress.data["complete"]:
        masks: dict[str, torch.Tensor] = {}
        visitors = mask_visitors(reader.prefix, entry, sparsity, n, m, {}, blocksize, percdamp, masks)
        calibrate = entry.statistics and progress.done < count
        state = _calibration(reader, windows, batch_size, true_sequential) if calibrate else None
        if state is not None and progress.done:
            state.hidden = progress.hidden()
            log.info("resuming %s at layer %d of %d", out, progress.done, count)
        for index in tqdm(range(progress.done, count), desc="layers", unit="layer", initial=progress.done, total=count):
            layer = reader.load_layer(index)
            _prune_layer(index, layer, state, visitors, "gram" in entry.statistics, batch_size, index == count - 1)
            writer.write(index, reader.tensors_of(layer, f"{reader.prefix}.{index}"))
            pruned = _save_masks(out / "masks", writer.name(index), masks)
            hidden = state.hidden if state is not None and index < count - 1 else None
            progress.save(index + 1, hidden, pruned)
            reader.free(layer)
            if on_layer is not None:
                on_layer(index)
        writer.write(count, reader.read(reader.other_names()))
        writer.finish(reader.directory)
        progress.save(count, None, {}, complete=True)
    return _summary(progress.data["pruned"])


def _prune_layer(index, layer, state: _Calibration | None, visitors, gram: bool, batch_size: int, last: bool) -> None:
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
        kwargs = [kw[index] for kw in state.kwargs]
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
