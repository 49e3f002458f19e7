"""Where a decoder-only model keeps its parts, so one layer-wise driver serves every family.

Hugging Face decoder-only models (LLaMA, Mistral, Qwen2, Gemma, Phi-3, SmolLM...) keep their decoder
layers at ``model.model.layers``; OPT-style models at ``model.model.decoder.layers``. Anything else
raises an error naming the class, rather than guessing. What differs between the supported families
(fused linears, norm offsets, GGUF names) is in ``bird_bone.models.families``.

MLP neurons: neuron j is row j of ``gate_proj`` and ``up_proj`` and column j of ``down_proj``; in
Phi-3's fused ``gate_up_proj`` (rows gate | up) it is rows j and width + j. Biases of gate/up rows
follow their rows; a bias of ``down_proj`` stays whole (none of the supported families has MLP
biases, but the cut is exact with them).
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
    """(gate, up, down) of a gated MLP with separate gate and up projections (LLaMA family)."""
    mlp = getattr(layer, "mlp", None)
    parts = [getattr(mlp, name, None) for name in ("gate_proj", "up_proj", "down_proj")]
    if not all(isinstance(p, nn.Linear) for p in parts):
        raise TypeError(f"{type(layer).__name__}: structured pruning needs a gated MLP (gate_proj, up_proj, down_proj)")
    return parts[0], parts[1], parts[2]


def down_projection(layer: nn.Module) -> nn.Linear:
    """The MLP's output projection, whose input columns are the neurons."""
    down = getattr(getattr(layer, "mlp", None), "down_proj", None)
    if not isinstance(down, nn.Linear):
        raise TypeError(f"{type(layer).__name__}: structured pruning needs a gated MLP with a down_proj")
    return down


def mlp_width(layer: nn.Module) -> int:
    """Neurons of the layer's MLP."""
    return down_projection(layer).in_features


def mlp_widths(model: nn.Module) -> list[int]:
    """Neurons per decoder layer's MLP (they differ once structured pruning removed some)."""
    return [mlp_width(layer) for layer in decoder_layers(model)]


def _linear_like(old: nn.Linear, rows: torch.Tensor | None = None, columns: torch.Tensor | None = None) -> nn.Linear:
    """A copy of ``old`` keeping the output ``rows`` (with their biases) or the input ``columns``."""
    weight = old.weight if rows is None else old.weight[rows]
    weight = weight if columns is None else weight[:, columns]
    bias = old.bias if old.bias is None or rows is None else old.bias[rows]
    new = nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None, device=weight.device, dtype=weight.dtype)
    new.weight = nn.Parameter(weight.contiguous(), requires_grad=old.weight.requires_grad)
    if bias is not None:
        new.bias = nn.Parameter(bias.contiguous(), requires_grad=old.bias.requires_grad)
    return new


@torch.no_grad()
def keep_neurons(layer: nn.Module, keep: torch.Tensor) -> None:
    """Physically shrink the layer's MLP to the neurons ``keep`` (indices into its current width)."""
    mlp, width = layer.mlp, mlp_width(layer)
    if isinstance(getattr(mlp, "gate_up_proj", None), nn.Linear):  # Phi-3: rows gate | up
        mlp.gate_up_proj = _linear_like(mlp.gate_up_proj, rows=torch.cat([keep, keep + width]))
    else:
        gate, up, _ = mlp_projections(layer)
        mlp.gate_proj, mlp.up_proj = _linear_like(gate, rows=keep), _linear_like(up, rows=keep)
    mlp.down_proj = _linear_like(mlp.down_proj, columns=keep)


def resize_mlps(model: nn.Module, widths: list[int]) -> None:
    """Give each layer's MLP the given width (weights uninitialised: a state dict is loaded next)."""
    for layer, width in zip(decoder_layers(model), widths, strict=True):
        if mlp_width(layer) != width:
            keep_neurons(layer, torch.arange(width))


def input_embeddings(model: nn.Module) -> tuple[str, nn.Module]:
    """The module name of the model's input embeddings, and the module."""
    embedding = model.get_input_embeddings()
    return next(name for name, module in model.named_modules() if module is embedding), embedding
