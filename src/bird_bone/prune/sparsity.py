"""Whether a model's sparsity pays off in a GGUF. llama.cpp has no sparse kernels: the zeros of an
unstructured or N:M-pruned model are stored and multiplied like any other weight, so that sparsity
costs quality and saves neither bytes nor time there. Only structured pruning (``prune.method:
structured``, which cuts MLP neurons out of the matrices) makes a GGUF smaller and faster; sparse
models belong to runtimes with sparse kernels (the compressed-tensors export)."""

from __future__ import annotations

import logging

from torch import nn

from bird_bone.export.compressed import sparsity_structure
from bird_bone.models.adapters import prunable_linears

log = logging.getLogger(__name__)

# A dense model dequantized from 4 bits already holds some exact zeros (SmolLM2: 0.24 %); above
# this share of its decoder linears the zeros are pruning's.
SPARSE_SHARE = 0.05


def gguf_sparsity_warning(model: nn.Module, threshold: float = SPARSE_SHARE) -> str | None:
    """One line, also logged as a warning, when ``model``'s decoder linears are more than ``threshold``
    zeros (unstructured or N:M sparsity) and it is exported to GGUF; None when they are not."""
    pattern, zeros = sparsity_structure([m.weight.detach() for m in prunable_linears(model).values()])
    if zeros <= threshold:
        return None
    message = (
        f"the model's decoder linears are {zeros:.1%} zeros ({pattern} sparsity): llama.cpp stores and multiplies "
        "them like any other weight, so the GGUF is neither smaller nor faster for it; for GGUF prune with "
        "prune.method: structured, keep sparse models for runtimes with sparse kernels (compressed-tensors)"
    )
    log.warning("GGUF export: %s", message)
    return message
