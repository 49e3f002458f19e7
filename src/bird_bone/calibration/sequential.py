"""The sequential layer driver every calibration method shares (the SparseGPT/Wanda pattern).

Capture the inputs of decoder layer 0 for all calibration windows, then per layer: hook its
linears, run the windows through it, hand the statistics to ``visit`` (which may prune or
quantize the layer), and run the windows through it again so that layer i+1 sees the outputs of
the already-modified layer i. Peak memory: the model, one layer's activations and the hidden
states of the calibration set, never the whole model's activations.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn
from tqdm.auto import tqdm

from bird_bone.calibration.statistics import InputStatistics, collect_input_statistics
from bird_bone.models.adapters import decoder_layers, linear_modules

Visit = Callable[[int, nn.Module, dict[str, InputStatistics]], bool]


class _Captured(Exception):
    """Raised by the layer-0 hook to stop the forward pass once its inputs are recorded."""


@torch.no_grad()
def capture_layer_inputs(model: nn.Module, windows: torch.Tensor, batch_size: int) -> tuple[list, list]:
    """Hidden states entering layer 0, one tensor per batch, and the keyword arguments the model
    passed to it (rotary embeddings, attention mask) for that batch."""
    hidden: list[torch.Tensor] = []
    kwargs: list[dict] = []

    def hook(_module, args, kw):
        hidden.append(args[0] if args else kw.pop("hidden_states"))
        kwargs.append({k: v for k, v in kw.items() if k != "hidden_states"})
        raise _Captured

    handle = decoder_layers(model)[0].register_forward_pre_hook(hook, with_kwargs=True)
    device = next(model.parameters()).device
    try:
        for first in range(0, windows.shape[0], batch_size):
            try:
                model(input_ids=windows[first : first + batch_size].to(device), use_cache=False)
            except _Captured:
                pass
    finally:
        handle.remove()
    return hidden, kwargs


def _forward(layer: nn.Module, hidden: list, kwargs: list) -> list[torch.Tensor]:
    outputs = []
    for h, kw in zip(hidden, kwargs):
        out = layer(h, **kw)
        outputs.append(out[0] if isinstance(out, tuple) else out)
    return outputs


def _statistics_pass(layer: nn.Module, hidden: list, kwargs: list, stats: dict) -> None:
    """Run the windows only as far as the last linear's input: its product would be thrown away,
    since the layer is modified and run again. Falls back to full passes if a linear was missed."""
    last = list(linear_modules(layer).values())[-1]

    def stop(_module, _args):
        raise _Captured

    handle = last.register_forward_pre_hook(stop)  # registered after the statistics hooks: runs last
    try:
        for h, kw in zip(hidden, kwargs):
            try:
                layer(h, **kw)
            except _Captured:
                pass
    finally:
        handle.remove()
    if any(s.tokens == 0 for s in stats.values()):  # execution order differs from registration order
        for s in stats.values():
            s.reset()
        _forward(layer, hidden, kwargs)


@torch.no_grad()
def run_sequential(
    model: nn.Module,
    windows: torch.Tensor,
    visit: Visit,
    batch_size: int = 8,
    gram: bool = False,
    pattern_tokens: dict[str, int] | None = None,
    progress: bool = True,
    modifies: bool = True,
) -> None:
    """Drive ``visit(index, layer, statistics)`` over the decoder layers in order.

    ``visit`` returns True when it changed the layer; the layer's outputs are then recomputed.
    ``modifies``: ``visit`` is expected to change every layer, so the statistics pass can stop
    early (about a fifth less work); when False the statistics pass also yields the outputs.
    """
    was_training = model.training
    model.eval()
    hidden, kwargs = capture_layer_inputs(model, windows, batch_size)
    layers = decoder_layers(model)
    for index, layer in enumerate(tqdm(layers, desc="layers", unit="layer", disable=not progress)):
        outputs = None
        with collect_input_statistics(linear_modules(layer), gram, pattern_tokens) as stats:
            if modifies:
                _statistics_pass(layer, hidden, kwargs, stats)
            else:
                outputs = _forward(layer, hidden, kwargs)
        changed = visit(index, layer, stats)
        if index < len(layers) - 1:
            hidden = _forward(layer, hidden, kwargs) if changed or outputs is None else outputs
    model.train(was_training)
