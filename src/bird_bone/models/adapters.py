"""Where a decoder-only model keeps its parts, so one layer-wise driver serves every family.

Hugging Face decoder-only models (LLaMA, Mistral, Qwen2, Gemma, Phi-3, SmolLM...) keep their decoder
layers at ``model.model.layers``; OPT-style models at ``model.model.decoder.layers``. Anything else
raises an error naming the class, rather than guessing.
"""

from __future__ import annotations

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
