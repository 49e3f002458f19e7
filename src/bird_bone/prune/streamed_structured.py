"""Cluster-aware structured neuron pruning of a model larger than memory: streamed, resumable.

The same wave as :func:`bird_bone.prune.structured.remove_neurons` (the same per-layer cut,
``cut_layer``, in the reference calibration order), run by the streamed layer loop of
``bird_bone.calibration.streamed``: each decoder layer is loaded, its MLP neurons chosen from that
layer's statistics, and the narrower layer written as its own shard. The output records the new
widths as the in-memory save does (``mlp_widths`` in ``bird_bone.json``; ``config.json`` keeps the
original ``intermediate_size``, which the cumulative fraction of a later wave refers to), so
:func:`bird_bone.io.checkpoint.load_checkpoint` and a later streamed run load it. The surviving
neurons' original indices are kept per layer in ``kept/`` (``<layer>.mlp.kept_neurons``, as the
prune pipeline names them).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import torch

from bird_bone.calibration.sequential import sequential_layer
from bird_bone.calibration.streamed import StreamPlan, stream_layers, windows_digest
from bird_bone.io.tensors import load_tensors, save_tensors
from bird_bone.models.adapters import mlp_width
from bird_bone.models.streaming import METADATA, StreamedCheckpoint
from bird_bone.prune.structured import check_wave, cut_layer

KEPT = "kept_neurons"


@torch.no_grad()
def stream_remove_neurons(
    source: str | Path,
    out: str | Path,
    windows: torch.Tensor,
    fraction: float,
    max_fraction_per_cluster: float = 0.1,
    clusters: int = 8,
    pattern_tokens: int = 256,
    seed: int = 0,
    batch_size: int = 8,
    kept: dict[str, torch.Tensor] | None = None,
    width_multiple: int = 1,
    on_layer: Callable[[int], None] | None = None,
) -> dict[str, torch.Tensor]:
    """One structured wave from the checkpoint ``source`` into the checkpoint ``out``; arguments as
    :func:`bird_bone.prune.structured.remove_neurons`. Returns the kept neurons' original indices
    by MLP name (``kept`` composed with this wave's cut)."""
    check_wave(fraction, width_multiple)
    if windows is None:
        raise ValueError("structured pruning needs calibration windows")
    reader = StreamedCheckpoint(source)
    config = reader.model.config
    target = config.intermediate_size - round(config.intermediate_size * fraction)
    out, count, kept = Path(out), len(reader.layers), dict(kept or {})
    settings = {
        "source": str(reader.directory.resolve()), "method": "structured", "fraction": fraction,
        "max_fraction_per_cluster": max_fraction_per_cluster, "clusters": clusters, "pattern_tokens": pattern_tokens,
        "seed": seed, "batch_size": batch_size, "width_multiple": width_multiple, "windows": windows_digest(windows),
        "kept": {name: index.tolist() for name, index in sorted(kept.items())},
    }  # fmt: skip
    patterns = {"mlp.down_proj": pattern_tokens}

    def step(index, layer, state, shard) -> dict:
        name = f"{reader.prefix}.{index}.mlp"
        original = kept.get(name, torch.arange(mlp_width(layer)))
        survivors = []

        def visit(_index, layer, stats) -> bool:
            survivors.append(cut_layer(layer, stats["mlp.down_proj"], target, width_multiple,
                                       max_fraction_per_cluster, clusters, seed))  # fmt: skip
            return not bool(survivors[0].all())

        kwargs = state.layer_kwargs(index)
        state.hidden = sequential_layer(index, layer, state.hidden, kwargs, visit, False, patterns, True, True,
                                        index == count - 1)  # fmt: skip
        save_tensors({f"{name}.{KEPT}": original[survivors[0]]}, out / "kept" / shard)
        return {name: mlp_width(layer)}

    def metadata(records: dict) -> dict[str, str]:
        widths = [records[f"{reader.prefix}.{i}.mlp"] for i in range(count)]
        data = {**reader.metadata, "stage": "prune", "prune": {k: v for k, v in settings.items() if k != "kept"}}
        data.pop("mlp_widths", None)
        if any(w != config.intermediate_size for w in widths):  # as bird_bone.io.checkpoint records them
            data["mlp_widths"] = widths
        return {METADATA: json.dumps(data, indent=2, sort_keys=True, default=str)}

    plan = StreamPlan(step, settings, windows, batch_size, extra_files=metadata)
    stream_layers(reader, out, plan, on_layer)
    return load_kept(out)


def load_kept(out: str | Path) -> dict[str, torch.Tensor]:
    """The kept neurons' original indices by MLP name, from a streamed structured output ``out``."""
    kept = {}
    for path in sorted((Path(out) / "kept").glob("*.safetensors")):
        kept.update({name.removesuffix(f".{KEPT}"): index for name, index in load_tensors(path).items()})
    return kept
