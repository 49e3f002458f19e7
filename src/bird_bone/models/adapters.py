"""Where a decoder-only model keeps its parts, so one layer-wise driver serves every family.

Hugging Face decoder-only models (LLaMA, Mistral, Qwen2, Gemma, Phi-3, SmolLM...) keep their decoder
layers at ``model.model.layers``; OPT-style models at ``model.model.decoder.layers``. Anything else
raises an error naming the class, rather than guessing.
"""

from __future__ import annotations

import torch
from torch import nn

_LAYER_PATHS = ("model.layers", "model.decoder.layers", "transformer.h")
DENSE_BY_DEFAULT = ("embed_tokens", "lm_head", "embed_positions", "wte", "wpe")


def _get(root: nn.Module, dotted: str) -> nn.Module | None:
    node = root
    for part in dotted.split("."):
        node = getattr(node, part, None)
        if node is None:
            return None
    return node


def decoder_layers(model: nn.Module) -> nn.ModuleList:
    """The model's decoder layers, in order."""
    for path in _LAYER_PATHS:
        layers = _get(model, path)
        if isinstance(layers, nn.ModuleList):
            return layers
    raise TypeError(f"{type(model).__name__}: no decoder layers at {', '.join(_LAYER_PATHS)}")


def layer_prefix(model: nn.Module) -> str:
    """The state-dict prefix of the decoder layers, e.g. ``model.layers``."""
    for path in _LAYER_PATHS:
        if isinstance(_get(model, path), nn.ModuleList):
            return path
    raise TypeError(f"{type(model).__name__}: no decoder layers")


def linear_modules(layer: nn.Module) -> dict[str, nn.Linear]:
    """The ``nn.Linear`` submodules of one decoder layer, by their name inside the layer."""
    return {name: module for name, module in layer.named_modules() if isinstance(module, nn.Linear)}


def prunable_linears(model: nn.Module) -> dict[str, nn.Linear]:
    """Every decoder-layer linear by its full module name (embeddings and head are excluded)."""
    prefix = layer_prefix(model)
    return {
        f"{prefix}.{index}.{name}": module
        for index, layer in enumerate(decoder_layers(model))
        for name, module in linear_modules(layer).items()
    }


def mlp_projections(layer: nn.Module) -> tuple[nn.Linear, nn.Linear, nn.Linear]:
    """(gate, up, down) of a gated MLP (LLaMA family): neuron j is row j of gate and up, column j of down."""
    mlp = getattr(layer, "mlp", None)
    parts = [getattr(mlp, name, None) for name in ("gate_proj", "up_proj", "down_proj")]
    if not all(isinstance(p, nn.Linear) for p in parts):
        raise TypeError(f"{type(layer).__name__}: structured pruning needs a gated MLP (gate_proj, up_proj, down_proj)")
    return parts[0], parts[1], parts[2]


def mlp_widths(model: nn.Module) -> list[int]:
    """Neurons per decoder layer's MLP (they differ once structured pruning removed some)."""
    return [mlp_projections(layer)[0].out_features for layer in decoder_layers(model)]


def _linear_like(old: nn.Linear, weight: torch.Tensor) -> nn.Linear:
    new = nn.Linear(weight.shape[1], weight.shape[0], bias=False, device=weight.device, dtype=weight.dtype)
    if old.bias is not None:
        raise TypeError("structured pruning of MLPs with biases is not supported")
    new.weight = nn.Parameter(weight.contiguous(), requires_grad=old.weight.requires_grad)
    return new


@torch.no_grad()
def keep_neurons(layer: nn.Module, keep: torch.Tensor) -> None:
    """Physically shrink the layer's MLP to the neurons ``keep`` (indices into its current width)."""
    gate, up, down = mlp_projections(layer)
    layer.mlp.gate_proj = _linear_like(gate, gate.weight[keep])
    layer.mlp.up_proj = _linear_like(up, up.weight[keep])
    layer.mlp.down_proj = _linear_like(down, down.weight[:, keep])


def resize_mlps(model: nn.Module, widths: list[int]) -> None:
    """Give each layer's MLP the given width (weights uninitialised: a state dict is loaded next)."""
    for layer, width in zip(decoder_layers(model), widths, strict=True):
        if mlp_projections(layer)[0].out_features != width:
            keep_neurons(layer, torch.arange(width))
