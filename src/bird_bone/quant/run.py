"""One NOVAQ compression run from its validated config (:class:`bird_bone.quant.config.NovaqConfig`):
stages 1-2, optional stage 3 against a teacher on calibration windows, then the honest bit
accounting. Shared by the ``novaq`` CLI and the Kedro stage so both report the same figures.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import torch
from torch import nn

from bird_bone.quant.activations import input_second_moments
from bird_bone.quant.config import NovaqConfig
from bird_bone.quant.novaq import (
    NovaqTensor,
    bit_accounting,
    default_filter,
    quantize_model,
    quantize_model_hessian,
    with_embeddings,
)
from bird_bone.quant.refine import refine

log = logging.getLogger(__name__)


@dataclass
class NovaqRun:
    quantized: dict[str, NovaqTensor]
    report: dict = field(default_factory=dict)


def compress(
    model: nn.Module,
    config: NovaqConfig,
    calibration: torch.Tensor | None = None,
    teacher: nn.Module | None = None,
    progress: bool = True,
) -> NovaqRun:
    """Quantize (and refine, when enabled and ``calibration`` windows are given); the model is untouched."""
    start = time.perf_counter()
    filter_fn = with_embeddings if config.include_embeddings else default_filter
    for flag in ("hessian_aware", "activation_aware"):
        if getattr(config, flag) and calibration is None:
            raise ValueError(f"novaq.{flag} needs calibration windows")
    if config.hessian_aware:  # the Hessian subsumes E[x_j^2] (its diagonal): activation_aware has no effect
        quantized = quantize_model_hessian(model, config, calibration, filter_fn, progress=progress)
    else:
        energies = None
        if config.activation_aware:
            names = [n for n, p in model.named_parameters() if filter_fn(n, p)]
            energies = input_second_moments(model, calibration, names, progress=progress)
        quantized = quantize_model(model, config, filter_fn, progress=progress, energies=energies)
    report: dict = {"novaq": config.model_dump(), "quantize_seconds": time.perf_counter() - start}
    report["index_bits_per_weight"] = config.index_bits_per_weight
    report["before_refinement"] = bit_accounting(model, quantized)
    if config.refine.enabled and config.refine.max_iterations and calibration is not None:
        result = refine(model, quantized, calibration, config.refine, teacher, progress)
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
