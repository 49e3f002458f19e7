"""Per-tensor sensitivity of the model being exported: how much the loss rises for an error in each
weight, measured on a few calibration windows of that model (one forward and backward pass each).

A linear y = W x gets a diagonal Kronecker-factored Fisher: H_j = E[x_j^2] of its input columns and
G_i = E[(dL/dy_i)^2] of its output rows (L the summed next-token loss, so each position's gradient is
that position's own). The token embedding E [vocab, hidden] gets, per element, the frequency of token
v times E[(dL/de_j)^2 | token v] (``elements``); tied to the head, it also gets the head's G and H.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from bird_bone.models.adapters import prunable_linears
from bird_bone.models.families import embedding_scale


@dataclass
class Sensitivity:
    """Loss curvature of one weight matrix [rows, columns]: any of the three parts may be absent."""

    rows: np.ndarray | None = None  # G_i = E[(dL/dy_i)^2], [rows]
    columns: np.ndarray | None = None  # H_j = E[x_j^2], [columns]
    elements: np.ndarray | None = None  # per-element Fisher of the input embedding, [rows, columns]

    def loss(self, error: np.ndarray) -> float:
        """Predicted loss rise of weight error dW (per token)."""
        # dL ~ 1/2 sum_ij G_i H_j dW_ij^2 (diagonal K-FAC, Martens & Grosse 2015; Fisher-weighted as HAWQ-V2/SqueezeLLM)
        sq = np.square(error, dtype=np.float64)
        total = 0.0
        if self.rows is not None and self.columns is not None:
            total += float(self.rows.astype(np.float64) @ sq @ self.columns.astype(np.float64))
        if self.elements is not None:
            total += float(np.einsum("ij,ij->", self.elements, sq, dtype=np.float64))
        return 0.5 * total

    def importance(self) -> np.ndarray | None:
        """The per-column importance vector llama.cpp rounds with: H, or the embedding's column sums."""
        if self.columns is not None:
            return self.columns.astype(np.float32)
        if self.elements is not None:
            return self.elements.sum(0).astype(np.float32) + 1e-12
        return None


class _Accumulator:
    """Running sums of x^2 (columns) and (dL/dy)^2 (rows) of one linear, or of the embedding's
    per-token (dL/de)^2 (elements), from hooks."""

    def __init__(self, module: nn.Module, embedding: bool, scale: float = 1.0):
        self.module, self.embedding, self.scale = module, embedding, scale
        self.tokens = 0
        self.columns = self.rows = self.elements = None

    def forward_hook(self, module, args, output) -> torch.Tensor | None:
        x = args[0]
        if self.embedding:  # a leaf that needs grad: the pass differentiates activations, not weights
            ids, output = x.reshape(-1), output.detach().requires_grad_(True)
            output.register_hook(lambda g: self._add_elements(ids, g))
            return output
        x = x.detach().reshape(-1, x.shape[-1]).float()
        self.tokens += x.shape[0]
        sq = x.square().sum(0)
        self.columns = sq if self.columns is None else self.columns + sq
        output.register_hook(self._add_rows)
        return None

    def _add_rows(self, grad: torch.Tensor) -> None:
        sq = grad.detach().reshape(-1, grad.shape[-1]).float().square().sum(0)
        self.rows = sq if self.rows is None else self.rows + sq

    def _add_elements(self, ids: torch.Tensor, grad: torch.Tensor) -> None:
        g = grad.detach().reshape(ids.numel(), -1).float() * self.scale  # dL/dE_v = scale * dL/d(output)
        if self.elements is None:
            self.elements = torch.zeros(self.module.weight.shape, dtype=torch.float32)
        self.elements.index_add_(0, ids, g.square())
        self.tokens += ids.numel()


@contextlib.contextmanager
def _hooks(accumulators: dict[str, _Accumulator]) -> Iterator[None]:
    handles = [a.module.register_forward_hook(a.forward_hook) for a in accumulators.values()]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def _accumulators(model: nn.Module) -> tuple[dict[str, _Accumulator], str, str]:
    linears = dict(prunable_linears(model))
    embed, head = model.get_input_embeddings(), model.get_output_embeddings()
    names = {id(m): n for n, m in model.named_modules()}
    head_name, embed_name = names[id(head)], names[id(embed)]
    linears[head_name] = head
    found = {name: _Accumulator(m, False) for name, m in linears.items()}
    found[embed_name] = _Accumulator(embed, True, embedding_scale(model))
    return found, f"{embed_name}.weight", f"{head_name}.weight"


def measure_sensitivity(model: nn.Module, windows: torch.Tensor) -> dict[str, Sensitivity]:
    """Sensitivity of every decoder linear, the head and the token embedding, by state-dict weight
    name (a tied head's statistics join the embedding's), from ``windows`` [n, L] one at a time."""
    accumulators, embed_key, head_key = _accumulators(model)
    was_training = model.training
    model.eval()
    params = [p for p in model.parameters() if p.requires_grad]
    for p in params:
        p.requires_grad_(False)
    try:
        with _hooks(accumulators):
            for window in windows:
                ids = window.reshape(1, -1)
                out = model(input_ids=ids, labels=ids, use_cache=False)
                (out.loss * (ids.shape[1] - 1)).backward()  # summed loss: each position's own gradient
    finally:
        for p in params:
            p.requires_grad_(True)
        model.train(was_training)
    return _collect(model, accumulators, embed_key, head_key)


def _collect(model, accumulators, embed_key: str, head_key: str) -> dict[str, Sensitivity]:
    result: dict[str, Sensitivity] = {}
    for name, acc in accumulators.items():
        sums = (acc.rows, acc.columns, acc.elements)
        result[f"{name}.weight"] = Sensitivity(*[None if t is None else (t / max(acc.tokens, 1)).numpy() for t in sums])
    tied = model.get_input_embeddings().weight is model.get_output_embeddings().weight
    if tied:
        head = result.pop(head_key)
        result[embed_key] = Sensitivity(head.rows, head.columns, result[embed_key].elements)
    return result
