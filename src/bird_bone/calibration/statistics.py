"""Running statistics of the inputs of linear layers, accumulated by forward hooks.

For an input X [tokens, columns] of a linear layer:
- ``sq_norms``: sum over tokens of X_j^2, per column j (Wanda's ||X_j||_2^2, up to a constant);
- ``gram``: X^T X (SparseGPT/GPTQ's Hessian H = 2 X^T X / n, up to the constant; optional);
- ``abs_mean``: mean |X_j| per column (for the input of an MLP's down projection: the neurons'
  mean |activation|), and ``pattern``: X_j on the first ``pattern_tokens`` tokens seen, per column,
  which cluster-aware pruning groups neurons by.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field

import torch
from torch import nn


def _blocks(columns: int, parts: int = 4) -> list[slice]:
    step = -(-columns // parts)
    return [slice(i, min(i + step, columns)) for i in range(0, columns, step)]


def accumulate_upper_gram(xtx: torch.Tensor, x: torch.Tensor) -> None:
    """xtx += X^T X on the diagonal and upper blocks only: 10 of 16 block products, the lower
    blocks being their transposes (see ``symmetric_from_upper``)."""
    blocks = _blocks(x.shape[1])
    for i, rows in enumerate(blocks):
        for cols in blocks[i:]:
            xtx[rows, cols].addmm_(x[:, rows].T, x[:, cols])


def symmetric_from_upper(xtx: torch.Tensor) -> torch.Tensor:
    full = xtx.clone()
    blocks = _blocks(xtx.shape[1])
    for i, rows in enumerate(blocks):
        for cols in blocks[i + 1 :]:
            full[cols, rows] = xtx[rows, cols].T
    return full


_CHUNK_ROWS = 256  # column sums over row chunks: cache-sized temporaries instead of one per batch


@dataclass
class InputStatistics:
    columns: int
    gram: bool = False
    pattern_tokens: int = 0
    abs_values: bool = True  # accumulate sum |X_j| (``abs_mean``); Wanda and SparseGPT need only the rest
    device: torch.device | str = "cpu"  # where the statistics live: the layer's weight's device
    tokens: int = 0
    sq_norms: torch.Tensor = field(init=False)
    abs_sum: torch.Tensor = field(init=False)
    xtx: torch.Tensor | None = field(init=False, default=None)
    pattern: list[torch.Tensor] = field(init=False, default_factory=list)

    def __post_init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.tokens = 0
        self.pattern = []
        self.sq_norms = torch.zeros(self.columns, dtype=torch.float32, device=self.device)
        self.abs_sum = torch.zeros(self.columns, dtype=torch.float32, device=self.device)
        if self.gram:
            self.xtx = torch.zeros(self.columns, self.columns, dtype=torch.float32, device=self.device)

    def add_batch(self, x: torch.Tensor) -> None:
        """Accumulate one batch of inputs [..., columns]."""
        x = x.detach().reshape(-1, self.columns).to(self.device, torch.float32)
        self.tokens += x.shape[0]
        for chunk in x.split(_CHUNK_ROWS):
            self.sq_norms += chunk.square().sum(0)
            if self.abs_values:
                self.abs_sum += chunk.abs().sum(0)
        if self.xtx is not None:
            accumulate_upper_gram(self.xtx, x)
        have = sum(p.shape[0] for p in self.pattern)
        if have < self.pattern_tokens:
            self.pattern.append(x[: self.pattern_tokens - have].clone())

    @property
    def abs_mean(self) -> torch.Tensor:
        if not self.abs_values:
            raise ValueError("mean |X| was not collected (abs_values=False)")
        return self.abs_sum / max(self.tokens, 1)

    @property
    def gram_matrix(self) -> torch.Tensor:
        """X^T X over every token seen (symmetric)."""
        if self.xtx is None:
            raise ValueError("the Gram matrix was not collected (gram=False)")
        return symmetric_from_upper(self.xtx)

    @property
    def hessian(self) -> torch.Tensor:
        """H = 2 X^T X / tokens (SparseGPT eq. 1's Hessian of the layer-wise squared error)."""
        return 2.0 * self.gram_matrix / max(self.tokens, 1)

    def patterns(self) -> torch.Tensor:
        """[columns, pattern tokens]: each column's inputs on the first tokens seen."""
        return (
            torch.cat(self.pattern).T.contiguous() if self.pattern else torch.empty(self.columns, 0, device=self.device)
        )


@contextlib.contextmanager
def collect_input_statistics(
    modules: dict[str, nn.Linear],
    gram: bool = False,
    pattern_tokens: dict[str, int] | None = None,
    abs_values: bool = True,
) -> Iterator[dict[str, InputStatistics]]:
    """Hook ``modules`` for the duration of the block; yields their statistics by name.

    Modules fed the very same input tensor one after the other (q/k/v, gate/up) share one
    statistics object: it is accumulated once, not once per module.
    """
    pattern_tokens = pattern_tokens or {}
    stats = {
        name: InputStatistics(m.in_features, gram, pattern_tokens.get(name, 0), abs_values, m.weight.device)
        for name, m in modules.items()
    }
    last: dict = {"input": None, "name": None}

    def hook(name: str):
        def accumulate(_module, args) -> None:
            x = args[0]
            if last["input"] is x and pattern_tokens.get(name, 0) == pattern_tokens.get(last["name"], 0):
                stats[name] = stats[last["name"]]  # same tensor as the previous module's input
            else:
                stats[name].add_batch(x)
                last["name"] = name
            last["input"] = x

        return accumulate

    handles = [module.register_forward_pre_hook(hook(name)) for name, module in modules.items()]
    try:
        yield stats
    finally:
        last.clear()
        for handle in handles:
            handle.remove()
