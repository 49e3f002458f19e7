"""Models larger than memory: a Hugging Face safetensors checkpoint read one decoder layer at a time.

The model is built on the meta device (accelerate's ``init_empty_weights``: parameters take no
memory, buffers such as the rotary frequencies are real), and a module's parameters are
materialised in float32 on demand from the source files, memory-mapped by ``safetensors.safe_open``
in the source dtype and cast per tensor. ``free`` sends a module back to the meta device. Each read
opens and closes its shard, so pages of the mapped files do not pile up in the process's resident
set over a run. A checkpoint whose MLPs structured pruning narrowed (``mlp_widths`` in its
``bird_bone.json``, as :func:`bird_bone.io.checkpoint.save_checkpoint` records them) gets a skeleton
of those widths. Where the layers are and what they are called comes from the adapters
(``bird_bone.models.adapters``); the family check from ``bird_bone.models.families``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from torch import nn

from bird_bone.errors import ModelLoadError
from bird_bone.models.adapters import decoder_layers, layer_prefix, resize_mlps
from bird_bone.models.families import family_of

INDEX = "model.safetensors.index.json"
METADATA = "bird_bone.json"  # bird_bone.io.checkpoint.METADATA_FILE


def weight_map(directory: Path) -> dict[str, str]:
    """Tensor name -> shard file name of a Hugging Face checkpoint (sharded or one file)."""
    index = directory / INDEX
    if index.is_file():
        try:
            return dict(json.loads(index.read_text(encoding="utf-8"))["weight_map"])
        except (ValueError, KeyError, TypeError) as exc:
            raise ModelLoadError(f"{index}: not a safetensors index (no weight_map): {exc}") from exc
    single = directory / "model.safetensors"
    if not single.is_file():
        raise ModelLoadError(f"{directory}: no {INDEX} and no model.safetensors (streaming reads safetensors)")
    return {name: single.name for name in _keys(single)}


def _keys(path: Path) -> list[str]:
    try:
        with safe_open(path, "pt") as handle:
            return list(handle.keys())
    except (SafetensorError, OSError) as exc:
        raise ModelLoadError(f"{path}: not a readable safetensors file: {exc}") from exc


def empty_model(directory: Path) -> nn.Module:
    """The causal LM of ``directory``'s config.json on the meta device (float32 once materialised)."""
    from accelerate import init_empty_weights
    from transformers import AutoConfig, AutoModelForCausalLM

    try:
        config = AutoConfig.from_pretrained(directory)
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"{directory}: no usable config.json: {exc}") from exc
    family_of(config)
    with init_empty_weights():
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    return model.eval()


def _metadata(directory: Path) -> dict:
    path = directory / METADATA
    if not path.is_file():
        return {}
    try:
        metadata = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(metadata, dict):
            raise ValueError("not a JSON object")
        return metadata
    except ValueError as exc:
        raise ModelLoadError(f"{path}: not valid JSON metadata: {exc}") from exc


class StreamedCheckpoint:
    """A checkpoint directory and its model skeleton; modules are loaded and freed one at a time."""

    def __init__(self, directory: str | Path):
        self.directory = Path(directory)
        if not self.directory.is_dir():
            raise ModelLoadError(f"{self.directory}: not a model directory")
        self.files = weight_map(self.directory)
        self.model = empty_model(self.directory)
        self.metadata = _metadata(self.directory)
        if self.metadata.get("low_rank"):
            raise ModelLoadError(f"{self.directory / METADATA}: low-rank factored layers cannot be streamed")
        widths = self.metadata.get("mlp_widths")
        if widths:
            if len(widths) != len(decoder_layers(self.model)):
                where = self.directory / METADATA
                raise ModelLoadError(f"{where}: mlp_widths has {len(widths)} entries, not one per layer")
            resize_mlps(self.model, widths)
        self.prefix = layer_prefix(self.model)
        self.layers = decoder_layers(self.model)
        self.dtypes: dict[str, torch.dtype] = {}  # source dtype of each tensor read so far

    def read(self, names: Iterable[str]) -> dict[str, torch.Tensor]:
        """The named tensors in their source dtype, each shard opened once and closed after."""
        by_file: dict[str, list[str]] = {}
        for name in names:
            if name not in self.files:
                raise ModelLoadError(f"{self.directory}: tensor {name} is missing from the checkpoint")
            by_file.setdefault(self.files[name], []).append(name)
        tensors = {}
        for file, wanted in by_file.items():
            path = self.directory / file
            try:
                with safe_open(path, "pt") as handle:
                    for name in wanted:
                        tensors[name] = handle.get_tensor(name).clone()  # own memory, not the mapping
            except (SafetensorError, OSError) as exc:
                raise ModelLoadError(f"{path}: cannot read tensor {wanted[0]}: {exc}") from exc
        self.dtypes.update({name: t.dtype for name, t in tensors.items()})
        return tensors

    def load(self, module: nn.Module, prefix: str) -> nn.Module:
        """Materialise ``module`` (state-dict names under ``prefix``) in float32 from the source."""
        expected = module.state_dict()
        tensors = self.read(f"{prefix}.{key}" for key in expected)
        state = {}
        for key, meta in expected.items():
            tensor = tensors[f"{prefix}.{key}"]
            if tensor.shape != meta.shape:
                raise ModelLoadError(
                    f"{self.directory}: tensor {prefix}.{key} has shape {list(tensor.shape)}, "
                    f"config.json implies {list(meta.shape)}"
                )
            state[key] = tensor.to(torch.float32)
        module.load_state_dict(state, assign=True)
        return module

    def load_layer(self, index: int) -> nn.Module:
        return self.load(self.layers[index], f"{self.prefix}.{index}")

    def tensors_of(self, module: nn.Module, prefix: str) -> dict[str, torch.Tensor]:
        """``module``'s tensors by checkpoint name, cast back to their source dtype."""
        return {
            f"{prefix}.{key}": value.detach().to(self.dtypes.get(f"{prefix}.{key}", value.dtype)).contiguous()
            for key, value in module.state_dict().items()
        }

    def other_names(self) -> list[str]:
        """The checkpoint's tensors outside the decoder layers (embeddings, final norm, head)."""
        return [name for name in self.files if not name.startswith(f"{self.prefix}.")]

    @staticmethod
    def free(module: nn.Module) -> None:
        """Send ``module``'s parameters back to the meta device."""
        module.to("meta")
