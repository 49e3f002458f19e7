"""The layer loop every streamed method shares: a model larger than memory, one decoder layer at a time.

The embedding is loaded to compute the calibration windows' inputs of layer 0 and freed; then each
decoder layer is loaded in float32 (``bird_bone.models.streaming``), handed to the method's ``step``
(which calibrates it, changes it and writes what it makes of it), written as its own shard of a
Hugging Face checkpoint in the source dtype (for methods that make a model) and freed. Peak
memory: one layer in float32, its statistics, and the hidden states of the calibration windows.

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
from torch import nn
from tqdm.auto import tqdm

from bird_bone.calibration.sequential import capture_layer_inputs
from bird_bone.errors import ArtifactError
from bird_bone.io.atomic import atomic_write_text
from bird_bone.io.sharded import ShardWriter
from bird_bone.io.tensors import load_tensors, save_tensors
from bird_bone.models.adapters import input_embeddings
from bird_bone.models.streaming import StreamedCheckpoint

log = logging.getLogger(__name__)


class Progress:
    """``progress.json`` (layers finished, what each step recorded) and the hidden states entering the next layer."""

    def __init__(self, directory: Path, settings: dict):
        self.directory = directory
        self.path = directory / "progress.json"
        if self.path.is_file():
            self.data = json.loads(self.path.read_text(encoding="utf-8"))
            self.data.setdefault("records", self.data.pop("pruned", {}))  # session 8's name for them
            differ = sorted(
                k for k in {*settings, *self.data["settings"]} if settings.get(k) != self.data["settings"].get(k)
            )
            if differ:
                raise ArtifactError(
                    f"{self.path}: written by a run with other settings ({', '.join(differ)}); "
                    "repeat them or remove the output directory"
                )
        else:
            self.data = {"settings": settings, "done": 0, "records": {}, "complete": False}

    @property
    def done(self) -> int:
        return self.data["done"]

    def hidden(self) -> list[torch.Tensor]:
        tensors = load_tensors(self._hidden_path(self.done))
        return [tensors[f"hidden.{i}"] for i in range(len(tensors))]

    def _hidden_path(self, layer: int) -> Path:
        return self.directory / f"hidden-{layer:05d}.safetensors"

    def save(self, done: int, hidden: list[torch.Tensor] | None, records: dict, complete: bool = False) -> None:
        if hidden is not None:
            save_tensors({f"hidden.{i}": h for i, h in enumerate(hidden)}, self._hidden_path(done))
        previous = self.done
        self.data.update(done=done, complete=complete)
        self.data["records"].update(records)
        atomic_write_text(self.path, json.dumps(self.data, indent=1) + "\n")
        if previous != done:
            self._hidden_path(previous).unlink(missing_ok=True)


@dataclass
class StreamCalibration:
    hidden: list[torch.Tensor]  # states entering the current layer: one per batch (one in all when true-sequential)
    kwargs: list  # per batch, per layer: the keyword arguments the model passes each layer
    probe: tuple | None  # true-sequential: one window's layer inputs, to find the linear groups
    groups: list | None = None

    def layer_kwargs(self, index: int) -> list[dict]:
        """The keyword arguments of layer ``index``, one per batch."""
        return [kw[index] for kw in self.kwargs]


@torch.no_grad()
def capture_streamed_inputs(
    reader: StreamedCheckpoint,
    windows: torch.Tensor,
    batch_size: int,
    true_sequential: bool = False,
    prepare: Callable[[str, nn.Module], None] | None = None,
) -> StreamCalibration:
    """The windows' hidden states entering layer 0 and every layer's arguments (embedding loaded,
    then freed). ``prepare(name, embedding)`` may change the loaded embedding first (e.g. quantize it)."""
    name, embedding = input_embeddings(reader.model)
    reader.load(embedding, name)
    if prepare is not None:
        prepare(name, embedding)
    try:
        if not true_sequential:
            hidden, kwargs = capture_layer_inputs(reader.model, windows, batch_size, every_layer=True)
            return StreamCalibration(hidden, kwargs, None)
        probe_hidden, probe_kwargs = capture_layer_inputs(reader.model, windows[:1], 1)
        hidden, kwargs = capture_layer_inputs(reader.model, windows, windows.shape[0], every_layer=True)
        return StreamCalibration(hidden, kwargs, (probe_hidden[0], probe_kwargs[0]))
    finally:
        reader.free(embedding)


def windows_digest(windows: torch.Tensor | None) -> str | None:
    """SHA-256 of the calibration windows' token ids (a resumed run must use the same ones)."""
    return None if windows is None else hashlib.sha256(windows.to(torch.int64).numpy().tobytes()).hexdigest()


Step = Callable[[int, nn.Module, StreamCalibration | None, str], dict]


@dataclass
class StreamPlan:
    """How :func:`stream_layers` runs a method: its ``step(index, layer, calibration, shard)``
    (returns what to record for the layer; ``shard`` is the layer's shard name, for the step's own
    files), whether finished layers are written as a checkpoint, and the last writes."""

    step: Step
    settings: dict
    windows: torch.Tensor | None = None
    batch_size: int = 4
    true_sequential: bool = False
    write_layers: bool = True
    prepare: Callable[[str, nn.Module], None] | None = None  # see capture_streamed_inputs
    others: Callable[[], dict[str, torch.Tensor]] | None = None  # tensors outside the layers (default: as read)
    extra_files: Callable[[dict], dict[str, str]] | None = None  # file name -> text, from the records


def stream_layers(reader: StreamedCheckpoint, out: str | Path, plan: StreamPlan, on_layer=None) -> dict:
    """Run ``plan`` over ``reader``'s layers into ``out`` (resuming where a killed run stopped);
    ``on_layer(i)`` is called once layer i is finished. Returns the progress data (settings, records)."""
    out = Path(out)
    progress = Progress(out / ".stream", plan.settings)
    count = len(reader.layers)
    writer = ShardWriter(out, count + 1)
    if progress.data["complete"]:
        return progress.data
    state = None
    if plan.windows is not None and progress.done < count:
        state = capture_streamed_inputs(reader, plan.windows, plan.batch_size, plan.true_sequential, plan.prepare)
        if progress.done:
            state.hidden = progress.hidden()
            log.info("resuming %s at layer %d of %d", out, progress.done, count)
    for index in tqdm(range(progress.done, count), desc="layers", unit="layer", initial=progress.done, total=count):
        layer = reader.load_layer(index)
        record = plan.step(index, layer, state, writer.name(index))
        if plan.write_layers:
            writer.write(index, reader.tensors_of(layer, f"{reader.prefix}.{index}"))
        hidden = state.hidden if state is not None and index < count - 1 else None
        progress.save(index + 1, hidden, record)
        reader.free(layer)
        if on_layer is not None:
            on_layer(index)
    if plan.write_layers:
        writer.write(count, plan.others() if plan.others is not None else reader.read(reader.other_names()))
        extra = plan.extra_files(progress.data["records"]) if plan.extra_files is not None else {}
        writer.finish(reader.directory, extra)
    progress.save(count, None, {}, complete=True)
    return progress.data
