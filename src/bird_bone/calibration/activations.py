"""Activation logging: per decoder-layer linear, the statistics every later stage reads.

Stored per linear ``<module>``: ``<module>.input_sq_norms`` (Wanda's ||X_j||^2), ``<module>.input_abs_mean``,
optionally ``<module>.input_gram`` (X^T X: SparseGPT/GPTQ, and the importance matrix of GGUF
quantization); per MLP ``<layer>.mlp.neuron_values`` and, only when ``clusters`` is set (the
cluster-aware structured method: its registry entry needs ``clusters``), ``<layer>.mlp.neuron_clusters``
(k-means on activation patterns). Also draws the heat-map.
"""

from __future__ import annotations

import torch
from torch import nn

from bird_bone.calibration.neurons import cluster_neurons, neuron_values
from bird_bone.calibration.sequential import run_sequential
from bird_bone.models.adapters import down_projection, layer_prefix


def log_activations(
    model: nn.Module,
    windows: torch.Tensor,
    batch_size: int = 8,
    gram: bool = False,
    clusters: int = 8,
    pattern_tokens: int = 256,
    seed: int = 0,
) -> dict[str, torch.Tensor]:
    """Run the calibration windows layer by layer (the model is not changed) and collect stats.

    ``clusters``: k-means clusters of MLP neurons per layer, on activation patterns over the first
    ``pattern_tokens`` tokens; 0: neither patterns nor clusters are computed."""
    prefix, out = layer_prefix(model), {}

    def visit(index, layer, stats) -> bool:
        out.update(layer_statistics(f"{prefix}.{index}", layer, stats, gram, clusters, seed))
        return False

    patterns = statistics_patterns(clusters, pattern_tokens)
    run_sequential(model, windows, visit, batch_size, gram, patterns, modifies=False)
    return out


def statistics_patterns(clusters: int, pattern_tokens: int) -> dict[str, int] | None:
    """The activation patterns to keep: the MLP neurons' first tokens, only when clustering them."""
    return {"mlp.down_proj": pattern_tokens} if clusters else None


def layer_statistics(name: str, layer: nn.Module, stats: dict, gram: bool, clusters: int, seed: int) -> dict:
    """The stored statistics of one decoder layer ``name`` from its linears' input statistics."""
    out = {}
    for local, s in stats.items():
        key = f"{name}.{local}"
        # modules fed the same input share one statistics object: store copies, not aliases
        out[f"{key}.input_sq_norms"] = s.sq_norms.clone()
        out[f"{key}.input_abs_mean"] = s.abs_mean.clone()
        if gram:
            out[f"{key}.input_gram"] = s.gram_matrix
    down = stats.get("mlp.down_proj")
    if down is not None:
        out[f"{name}.mlp.neuron_values"] = neuron_values(down_projection(layer).weight, down.abs_mean)
        if clusters:
            out[f"{name}.mlp.neuron_clusters"] = cluster_neurons(down.patterns(), clusters, seed)
    return out


def activation_heatmap(stats: dict[str, torch.Tensor], tokens: int):
    """Figure: RMS input per channel of each layer's attention (left) and MLP neurons (right)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def rows(suffix: str) -> torch.Tensor:
        keys = sorted(
            (k for k in stats if k.endswith(suffix)), key=lambda k: int(k.split(".")[-(suffix.count(".") + 2)])
        )
        return torch.stack([(stats[k] / tokens).sqrt() for k in keys]) if keys else torch.zeros(1, 1)

    attention = rows("self_attn.q_proj.input_sq_norms")
    neurons = rows("mlp.down_proj.input_sq_norms")
    fig, axes = plt.subplots(1, 2, figsize=(12, 5), constrained_layout=True)
    for ax, data, title in zip(axes, (attention, neurons), ("attention input channels", "MLP neurons")):
        image = ax.imshow(data.log10().clamp(min=-4).numpy(), aspect="auto", cmap="magma", interpolation="nearest")
        ax.set(title=f"log10 RMS activation: {title}", xlabel="channel", ylabel="decoder layer")
        fig.colorbar(image, ax=ax)
    return fig
