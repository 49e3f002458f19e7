"""One NOVAQ compression run from validated parameters (:class:`bird_bone.config.NovaqParams`):
stages 1-2, optional stage 3 against a teacher on calibration windows, then the honest bit
accounting. Shared by the ``novaq`` CLI and the Kedro stage so both report the same figures.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import torch
from torch import nn

from bird_bone.config import NovaqParams
from bird_bone.quant.activations import input_second_moments
from bird_bone.quant.novaq import (
    NovaqConfig,
    NovaqTensor,
    apply_quantized,
    bit_accounting,
    default_filter,
    quantize_model,
    quantize_model_hessian,
    with_embeddings,
)
from bird_bone.quant.refine import RefineConfig, refine

log = logging.getLogger(__name__)


@dataclass
class NovaqRun:
    quantized: dict[str, NovaqTensor]
    report: dict = field(default_factory=dict)


def novaq_config(params: NovaqParams) -> NovaqConfig:
    return NovaqConfig(
        subspaces=params.subspaces,
        codebook_size=params.codebook_size,
        residual_codebook_size=params.residual_codebook_size,
        outlier_threshold=params.outlier_threshold,
        group_rows=params.group_rows,
        group_cols=params.group_cols,
        hessian_aware=params.hessian_aware,
        percdamp=params.percdamp,
        kmeans_iterations=params.kmeans_iterations,
        kmeans_samples=params.kmeans_samples,
        codebook_update_iterations=params.codebook_update_iterations,
        seed=params.seed,
        activation_aware=params.activation_aware,
    )


def refine_config(params: NovaqParams) -> RefineConfig:
    r = params.refine
    return RefineConfig(
        max_iterations=r.max_iterations,
        learning_rate=r.learning_rate,
        temperature=r.temperature,
        kl_weight=r.kl_weight,
        cosine_weight=r.cosine_weight,
        batch_size=r.batch_size,
        tune_scales=r.tune_scales,
        seed=r.seed,
    )


def compress(
    model: nn.Module,
    params: NovaqParams,
    calibration: torch.Tensor | None = None,
    teacher: nn.Module | None = None,
    progress: bool = True,
) -> NovaqRun:
    """Quantize (and refine, when enabled and ``calibration`` windows are given); the model is untouched."""
    config = novaq_config(params)
    start = time.perf_counter()
    filter_fn = with_embeddings if params.include_embeddings else default_filter
    energies = None
    if params.activation_aware:
        if calibration is None:
            raise ValueError("novaq.activation_aware needs calibration windows")
        names = [n for n, p in model.named_parameters() if filter_fn(n, p)]
        energies = input_second_moments(model, calibration, names, progress=progress)
    if params.hessian_aware:
        if calibration is None:
            raise ValueError("novaq.hessian_aware needs calibration windows")
        quantized = quantize_model_hessian(model, config, calibration, filter_fn, progress=progress)
    else:
        quantized = quantize_model(model, config, filter_fn, progress=progress, energies=energies)
    report: dict = {"novaq": params.model_dump(), "quantize_seconds": time.perf_counter() - start}
    report["index_bits_per_weight"] = config.index_bits_per_weight
    report["before_refinement"] = bit_accounting(model, quantized)
    if params.refine.enabled and params.refine.max_iterations and calibration is not None:
        result = refine(model, quantized, calibration, refine_config(params), teacher, progress)
        report["refinement"] = result.to_dict()
    else:
        report["refinement"] = None
    report["accounting"] = bit_accounting(model, quantized)
    log.info(
        "NOVAQ: %.3f bits/weight (quantized layers), %.3f (whole model), %.2fx vs fp16",
        report["accounting"]["quantized_bits_per_weight"],
        report["accounting"]["total_bits_per_weight"],
        report["accounting"]["compression_vs_fp16"],
    )
    return NovaqRun(quantized, report)


def quantized_copy(model: nn.Module, run: NovaqRun) -> nn.Module:
    """A deep copy of ``model`` carrying the decoded NOVAQ weights (for evaluation)."""
    import copy

    return apply_quantized(copy.deepcopy(model), run.quantized)
