"""Hessian-aware rounding into llama.cpp's block grids: GPTQ's error feedback over ggml blocks.

llama.cpp rounds every block of a row on its own, weighting each column by an importance vector (the
diagonal of the input Gram). GPTQ (Frantar et al. 2022, Algorithm 1) instead carries each rounding
error into the columns not yet rounded, through the full Gram H = X^T X of the layer's input: after
the columns S of a block are rounded with error E_S, the remaining columns R move by
``-E_S U_SS^{-1} U_SR``, U the upper Cholesky factor of H^{-1} (the OBS update for a set of columns).
Here the set is one ggml block (32 columns, or a 256-column super-block for the K- and I-quants), and
each block is rounded by llama.cpp's own C code (``bird_bone.export.ggml_quant``) with the same
importance vector llama.cpp would use: the bytes are a valid encoding of the type by construction,
nothing is packed here. Within a block there is no feedback (a block's scales depend on all its
values), so the gain grows with the number of blocks per row.

Written by hand because llama.cpp and ``gguf`` round without error feedback, and the GPTQ
implementations (AutoGPTQ, GPTQModel, llm-compressor) round into their own integer grids, not into
ggml's block formats.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from bird_bone.calibration.statistics import collect_input_statistics
from bird_bone.errors import ArtifactError
from bird_bone.export import ggml_quant
from bird_bone.models.adapters import prunable_linears

DAMP = 0.01  # GPTQ's dampening: lambda = 1 % of the mean diagonal of H


def upper_inverse_cholesky(gram: np.ndarray, damp: float = DAMP) -> torch.Tensor:
    """U with H^{-1} = U^T U (upper triangular), H dampened; dead columns (H_jj = 0) get H_jj = 1."""
    h = torch.as_tensor(gram, dtype=torch.float64).clone()
    dead = torch.diagonal(h) <= 0
    h[dead, dead] = 1.0
    h.diagonal().add_(damp * torch.diagonal(h).mean())
    try:
        inverse = torch.cholesky_inverse(torch.linalg.cholesky(h))
        return torch.linalg.cholesky(inverse, upper=True)
    except torch.linalg.LinAlgError as error:
        raise ArtifactError(f"input Gram of {h.shape[0]} columns is not positive definite: {error}") from None


def gptq_quantize(
    weight: np.ndarray, gram: np.ndarray, type: str, importance: np.ndarray | None = None, damp: float = DAMP
) -> np.ndarray:
    """The bytes llama.cpp stores for ``weight`` [rows, width] in ``type`` (uint8 [rows, row_bytes]),
    each block rounded by llama.cpp after the errors of the blocks before it were fed forward through
    ``gram`` [width, width] (X^T X of the input); ``importance`` [width]: llama.cpp's per-column weights."""
    rows, width = weight.shape
    if gram.shape != (width, width):
        raise ArtifactError(f"input Gram of shape {gram.shape} for a {rows} x {width} matrix")
    if not ggml_quant.fits(type, width):
        raise ArtifactError(f"rows of {width} do not split into {type} blocks of {ggml_quant.block_size(type)}")
    block = ggml_quant.block_size(type)
    u = upper_inverse_cholesky(gram, damp)
    w = torch.from_numpy(np.array(weight, dtype=np.float64))
    parts = []
    for start in range(0, width, block):
        s = slice(start, start + block)
        piece = w[:, s].to(torch.float32).numpy()
        data = ggml_quant.quantize(piece, type, None if importance is None else importance[s])
        parts.append(data)
        if start + block < width:
            error = w[:, s] - torch.from_numpy(ggml_quant.dequantize(data, type)).to(torch.float64)
            step = torch.linalg.solve_triangular(u[s, s], error, upper=True, left=False)  # E_S U_SS^{-1}
            w[:, start + block :] -= step @ u[s, start + block :]
    return np.concatenate(parts, axis=1)


def output_error(weight: np.ndarray, decoded: np.ndarray, gram: np.ndarray) -> float:
    """tr(E H E^T) / tr(W H W^T): the relative squared error of the layer's output on its inputs."""
    w = torch.as_tensor(weight, dtype=torch.float64)
    e = torch.as_tensor(decoded, dtype=torch.float64) - w
    h = torch.as_tensor(gram, dtype=torch.float64)
    return float(((e @ h) * e).sum() / ((w @ h) * w).sum().clamp_min(1e-30))


def input_grams(model: nn.Module, windows: torch.Tensor) -> dict[str, np.ndarray]:
    """X^T X of the input of every decoder linear and of an untied head, by state-dict weight name,
    over ``windows`` [n, L] (one at a time); linears fed the same input share one array."""
    linears = dict(prunable_linears(model))
    head = model.get_output_embeddings()
    if isinstance(head, nn.Linear) and head.weight is not model.get_input_embeddings().weight:
        linears[next(n for n, m in model.named_modules() if m is head)] = head
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), collect_input_statistics(linears, gram=True, abs_values=False) as stats:
            for window in windows:
                model(input_ids=window.reshape(1, -1), use_cache=False)
            shared: dict[int, np.ndarray] = {}
            return {f"{n}.weight": shared.setdefault(id(s), s.gram_matrix.numpy()) for n, s in stats.items()}
    finally:
        model.train(was_training)
