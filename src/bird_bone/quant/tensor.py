"""One NOVAQ-quantized matrix held as codes and codebooks (NOVAQ eq. 1-2), and its stored bits.

Kept apart from the quantizer (``novaq.py``) so the codebook update and the file format can use it
without importing the quantizer.
"""

from __future__ import annotations

import torch
from torch import nn

from bird_bone.quant.codebook import gather_codewords, index_bits
from bird_bone.quant.gptvq import from_tiles

FP16_BITS = 16
OUTLIER_INDEX_BITS = 32  # outlier row indices are stored as int32


class NovaqTensor(nn.Module):
    """One quantized [rows, cols] matrix: w = mu + s * (C1[i1] + C2[i2]) (NOVAQ eq. 1-2)."""

    def __init__(self, shape, primary, residual, codes1, codes2, mean, scale, outliers, column_scale=None, tile=None):
        super().__init__()
        self.shape = tuple(shape)
        self.tile = tuple(tile) if tile else (shape[0] // primary.shape[0], shape[1])  # (tile rows, tile cols)
        self.primary = nn.Parameter(primary.float())  # [G, K1, d]
        self.residual = nn.Parameter(residual.float())  # [G, K2, d]
        self.mean = nn.Parameter(mean.float(), requires_grad=False)  # [rows]
        self.outlier_scale = nn.Parameter(scale[outliers].float(), requires_grad=False)  # [n]
        self.register_buffer("codes1", codes1.long())
        self.register_buffer("codes2", codes2.long())
        self.register_buffer("outliers", outliers.long())
        self.register_buffer("column_scale", None if column_scale is None else column_scale.float())

    def decode(self) -> torch.Tensor:
        """The dense weight, differentiable in codebooks, means and outlier scales."""
        rows, cols = self.shape
        normalized = gather_codewords(self.primary, self.codes1) + gather_codewords(self.residual, self.codes2)
        normalized = from_tiles(normalized, rows, cols, *self.tile)
        if self.column_scale is not None:  # activation-aware: undo w * t_j
            normalized = normalized / self.column_scale[None, :]
        scale = normalized.new_ones(rows).index_put((self.outliers,), self.outlier_scale)
        return normalized * scale[:, None] + self.mean[:, None]

    def round_to_storage(self) -> None:
        """Round the float parameters to float16, as the file stores them."""
        with torch.no_grad():
            for p in (self.primary, self.residual, self.mean, self.outlier_scale):
                p.copy_(p.half().float())

    @property
    def scales_every_row(self) -> bool:
        """Every row has its own scale (``outlier_threshold`` 1.0): no row indices need storing."""
        return self.outliers.numel() == self.shape[0]

    def bits(self) -> dict[str, int]:
        """Stored bits by kind: indices, codebooks, means, scales, outlier metadata."""
        rows, cols = self.shape
        vectors = rows * cols // self.primary.shape[2]
        n_out = self.outliers.numel()
        columns = 0 if self.column_scale is None else self.column_scale.numel()
        return {
            "indices": vectors * (index_bits(self.primary.shape[1]) + index_bits(self.residual.shape[1])),
            "codebooks": (self.primary.numel() + self.residual.numel()) * FP16_BITS,
            "means": rows * FP16_BITS,
            "scales": n_out * FP16_BITS,
            "outlier_metadata": 0 if self.scales_every_row else n_out * OUTLIER_INDEX_BITS,
            "column_scales": columns * FP16_BITS,
        }

    @property
    def numel(self) -> int:
        return self.shape[0] * self.shape[1]
