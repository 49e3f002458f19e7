"""NOVAQ composed: normalize (stage 1), residual vector codebooks (stage 2), decode, bit accounting.

Like torchao's ``quantize_(model, config)``: :func:`quantize_model` takes a model, a
:class:`NovaqConfig` and a filter over weight names and returns one :class:`NovaqTensor` per chosen
2-D weight, without touching the model; :func:`apply_quantized` writes the decoded weights back
(dense float, i.e. what a reader of the NOVAQ file gets). Keeping the codes outside the model lets
refinement (``refine.py``) run the student through ``torch.func.functional_call``.
"""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Callable

import torch
from torch import nn
from tqdm.auto import tqdm

from bird_bone.calibration.sequential import run_sequential
from bird_bone.models.adapters import layer_prefix, linear_modules
from bird_bone.quant.codebook_update import update_codebooks
from bird_bone.quant.config import NovaqConfig
from bird_bone.quant.gptvq import gptvq_quantize
from bird_bone.quant.normalize import normalize
from bird_bone.quant.tensor import FP16_BITS, NovaqTensor

log = logging.getLogger(__name__)
__all__ = ["NovaqConfig", "NovaqTensor", "apply_quantized", "bit_accounting", "quantize_model", "quantize_tensor"]


def tile_shape(name: str, shape: tuple[int, int], config: NovaqConfig) -> tuple[int, int]:
    """(tile rows, tile cols) of the codebook scope for a matrix, after checking they divide it."""
    rows, cols = shape
    tile = (config.group_rows or rows, config.group_cols or cols)
    if cols % config.subspaces or tile[1] % config.subspaces:
        raise ValueError(f"{name}: {tile[1]} columns per tile are not a multiple of subspaces={config.subspaces}")
    if rows % tile[0]:
        raise ValueError(f"{name}: {rows} rows are not a multiple of group_rows={config.group_rows}")
    if cols % tile[1]:
        raise ValueError(f"{name}: {cols} columns are not a multiple of group_cols={config.group_cols}")
    return tile


def column_scales(energy: torch.Tensor) -> torch.Tensor:
    """t_j = sqrt(E[x_j^2] / mean E[x^2]), clamped to [1e-2, 1e2] and rounded to float16."""
    t = (energy.float() / energy.float().mean().clamp_min(1e-12)).sqrt()
    return t.clamp(1e-2, 1e2).half().float()


def quantize_tensor(
    weight: torch.Tensor,
    config: NovaqConfig,
    name: str = "weight",
    energy: torch.Tensor | None = None,
    hessian: torch.Tensor | None = None,
) -> NovaqTensor:
    """Stages 1-2 on one matrix, one codebook pair per ``group_rows`` x ``group_cols`` tile. With
    ``hessian`` (of the layer's inputs) GPTVQ assignment with error feedback; with ``energy``
    (E[x_j^2] per input column, no Hessian) the k-means error is weighted by it."""
    rows, cols = weight.shape
    tile = tile_shape(name, (rows, cols), config)
    normalized, norm = normalize(weight, config.outlier_threshold)
    t = column_scales(energy) if energy is not None and hessian is None else None
    if t is not None:
        normalized = normalized * t[None, :]
    codes = gptvq_quantize(
        normalized, hessian, config.codebook_size, config.residual_codebook_size, config.subspaces, *tile,
        config.kmeans_iterations, config.seed, config.kmeans_samples, config.percdamp,
    )  # fmt: skip
    q = NovaqTensor(
        (rows, cols), codes.primary, codes.residual, codes.codes1, codes.codes2,
        norm.mean, norm.scale, norm.outliers, t, tile,
    )  # fmt: skip
    q.round_to_storage()
    if hessian is not None and config.codebook_update_iterations:
        update_codebooks(q, weight, hessian, config.codebook_update_iterations, config.percdamp)
    return q


def default_filter(name: str, tensor: torch.Tensor) -> bool:
    """Decoder-layer linear weights only (embeddings, head and norms stay dense)."""
    return tensor.ndim == 2 and ".layers." in name and name.endswith(".weight")


def with_embeddings(name: str, tensor: torch.Tensor) -> bool:
    """Every 2-D weight, token embeddings and output head included."""
    return tensor.ndim == 2 and name.endswith(".weight")


def quantize_model(
    model: nn.Module,
    config: NovaqConfig,
    filter_fn: Callable[[str, torch.Tensor], bool] = default_filter,
    progress: bool = True,
    energies: dict[str, torch.Tensor] | None = None,
) -> dict[str, NovaqTensor]:
    """Quantize every parameter chosen by ``filter_fn`` (tied parameters once, under their first name);
    ``energies`` (from ``activations.input_second_moments``) turns on activation-aware weighting."""
    start = time.perf_counter()
    chosen = [(n, p) for n, p in model.named_parameters() if filter_fn(n, p)]
    out = {}
    for name, param in tqdm(chosen, desc="novaq quantize", unit="tensor", disable=not progress):
        energy = (energies or {}).get(name) if config.activation_aware else None
        out[name] = quantize_tensor(param.detach(), config, name, energy)
    log.info("NOVAQ stages 1-2: %d tensors in %.1f s", len(out), time.perf_counter() - start)
    return out


def quantize_model_hessian(
    model: nn.Module,
    config: NovaqConfig,
    calibration: torch.Tensor,
    filter_fn: Callable[[str, torch.Tensor], bool] = default_filter,
    progress: bool = True,
    batch_size: int = 8,
    embedding_config: NovaqConfig | None = None,
) -> dict[str, NovaqTensor]:
    """GPTVQ-style stages 1-2 layer by layer on a working copy of ``model``: the Hessian of each
    decoder linear comes from the calibration inputs as they leave the already-quantized layers
    before it. Chosen weights outside the decoder layers (embeddings, head) are quantized first,
    without a Hessian, with ``embedding_config`` (default: ``config``). ``model`` is untouched."""
    start = time.perf_counter()
    work = copy.deepcopy(model)
    chosen = {n for n, p in model.named_parameters() if filter_fn(n, p)}
    out: dict[str, NovaqTensor] = {}
    prefix = layer_prefix(work)
    for name, param in work.named_parameters():
        if name in chosen and not name.startswith(prefix + "."):
            out[name] = quantize_tensor(param.detach(), embedding_config or config, name)
    apply_quantized(work, out)

    def visit(index: int, layer: nn.Module, stats) -> bool:
        for local, module in linear_modules(layer).items():
            name = f"{prefix}.{index}.{local}.weight"
            if name in chosen:
                out[name] = quantize_tensor(module.weight.detach(), config, name, hessian=stats[local].hessian)
                module.weight.data.copy_(out[name].decode().to(module.weight.dtype))
        return True

    run_sequential(work, calibration, visit, batch_size=batch_size, gram=True, progress=progress)
    del work
    log.info("NOVAQ stages 1-2 (Hessian-aware): %d tensors in %.1f s", len(out), time.perf_counter() - start)
    return out


@torch.no_grad()
def apply_quantized(model: nn.Module, quantized: dict[str, NovaqTensor]) -> nn.Module:
    """Overwrite the model's weights with the decoded NOVAQ weights (in place)."""
    params = dict(model.named_parameters())
    for name, q in quantized.items():
        params[name].copy_(q.decode().to(params[name].dtype))
    return model


def bit_accounting(model: nn.Module, quantized: dict[str, NovaqTensor], dense_bits: int = FP16_BITS) -> dict:
    """Bits per weight for the quantized tensors and for the whole model (other parameters at
    ``dense_bits``), by kind, and the compression ratio against float16."""
    kinds: dict[str, int] = {}
    for q in quantized.values():
        for kind, bits in q.bits().items():
            kinds[kind] = kinds.get(kind, 0) + bits
    q_weights = sum(q.numel for q in quantized.values())
    q_bits = sum(kinds.values())
    total_weights = sum(p.numel() for p in model.parameters())  # tied parameters counted once
    dense_weights = total_weights - q_weights
    total_bits = q_bits + dense_weights * dense_bits
    return {
        "quantized_weights": q_weights,
        "quantized_bits": q_bits,
        "quantized_bits_per_weight": q_bits / max(q_weights, 1),
        "bits_by_kind": kinds,
        "dense_weights": dense_weights,
        "dense_bits_per_weight": dense_bits,
        "total_weights": total_weights,
        "total_bits": total_bits,
        "total_bits_per_weight": total_bits / total_weights,
        "compression_vs_fp16": total_weights * FP16_BITS / total_bits,
    }
