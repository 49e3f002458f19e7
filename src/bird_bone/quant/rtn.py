"""Round-to-nearest (RTN) asymmetric integer quantization with per-group scale and zero point:
the simplest baseline for NOVAQ's benchmark (e.g. 4-bit, groups of 128 along the input dimension).

Bits per weight count the float16 scale and the ``bits``-wide zero point of each group, as GPTQ's
reports do: 4 + (16 + 4) / 128 = 4.16 for 4-bit g128 (4.25 when the zero point is also float16).
"""

from __future__ import annotations

import torch
from torch import nn


def rtn_quantize(weight: torch.Tensor, bits: int = 4, group_size: int = 128) -> torch.Tensor:
    """The dequantized RTN approximation of ``weight`` [rows, cols] (same shape, float32); a last
    partial group (576 columns with g128) is quantized on its own, as GPTQ's code does."""
    cols = weight.shape[1]
    full = cols - cols % group_size
    parts = [_rtn_groups(weight[:, :full], bits, group_size)] if full else []
    if full < cols:
        parts.append(_rtn_groups(weight[:, full:], bits, cols - full))
    return torch.cat(parts, dim=1)


def _rtn_groups(weight: torch.Tensor, bits: int, group_size: int) -> torch.Tensor:
    rows, cols = weight.shape
    w = weight.detach().float().reshape(rows, cols // group_size, group_size)
    lo, hi = w.amin(-1, keepdim=True), w.amax(-1, keepdim=True)
    levels = (1 << bits) - 1
    scale = ((hi - lo) / levels).clamp_min(1e-8).half().float()
    zero = torch.round(-lo / scale).clamp(0, levels)
    q = torch.clamp(torch.round(w / scale) + zero, 0, levels)
    return ((q - zero) * scale).reshape(rows, cols)


def rtn_bits_per_weight(bits: int = 4, group_size: int = 128, zero_bits: int = 16) -> float:
    return bits + (16 + zero_bits) / group_size


@torch.no_grad()
def rtn_quantize_model(model: nn.Module, bits: int = 4, group_size: int = 128, filter_fn=None) -> int:
    """Replace chosen 2-D weights in place by their RTN approximation; returns the weights quantized."""
    from bird_bone.quant.novaq import default_filter

    filter_fn = filter_fn or default_filter
    count = 0
    for name, param in model.named_parameters():
        if filter_fn(name, param):
            param.copy_(rtn_quantize(param, bits, group_size).to(param.dtype))
            count += param.numel()
    return count
