"""The NOVAQ configuration, beside the method (as peft keeps ``LoraConfig`` beside LoRA): the
pydantic models that validate the ``novaq:`` group of ``conf/base/parameters_novaq.yml`` are the very
objects the quantizer (:mod:`bird_bone.quant.novaq`), the refinement (:mod:`bird_bone.quant.refine`)
and the writer receive. No field is copied into a second config class.
"""

from __future__ import annotations

import math
from typing import ClassVar, Literal

from pydantic import Field

from bird_bone.params import Params


class RefineConfig(Params):
    """Stage 3, teacher-guided refinement (``novaq.refine``), and the calibration windows it runs on."""

    section: ClassVar[str] = "novaq.refine"
    enabled: bool = Field(True, description="run stage 3, teacher-guided refinement of the codebooks")
    max_iterations: int = Field(50, ge=0)
    learning_rate: float = Field(1e-3, gt=0, allow_inf_nan=False)
    temperature: float = Field(1.0, gt=0, allow_inf_nan=False, description="T of KL(p_teacher || p_student)")
    kl_weight: float = Field(1.0, ge=0, allow_inf_nan=False)
    cosine_weight: float = Field(
        0.1, ge=0, allow_inf_nan=False, description="lambda of sum over layers (1 - cos(h_t, h_s))"
    )
    tune_scales: bool = Field(True, description="also tune per-row means and row scales")
    calibration_windows: int = Field(32, ge=1)
    window_length: int = Field(256, ge=2)
    batch_size: int = Field(1, ge=1)
    seed: int = 0


class NovaqConfig(Params):
    """Stages 1-2 (normalize, residual vector codebooks), what is quantized and how the rest is stored."""

    section: ClassVar[str] = "novaq"
    subspaces: int = Field(4, ge=1, le=64, description="weights per sub-vector (d)")
    codebook_size: int = Field(16, ge=2, le=65536, description="K1, primary codebook entries")
    residual_codebook_size: int = Field(4, ge=1, le=65536, description="K2, residual codebook entries")
    outlier_threshold: float = Field(0.01, ge=0, le=1, description="fraction of rows rescaled (1: all)")
    group_rows: int = Field(0, ge=0, description="rows of a codebook tile (codebook scope); 0: all rows")
    group_cols: int = Field(0, ge=0, description="columns of a codebook tile; 0: all columns")
    hessian_aware: bool = Field(
        True, description="GPTVQ: Hessian-weighted k-means and assignment with error feedback (calibration)"
    )
    percdamp: float = Field(0.01, gt=0, le=1, description="Hessian dampening, fraction of mean(diag H)")
    kmeans_iterations: int = Field(10, ge=1)
    kmeans_samples: int = Field(16384, ge=0, description="vectors per codebook k-means fits on (0: all)")
    codebook_update_iterations: int = Field(
        4, ge=0, description="GPTVQ codebook update: L-BFGS steps on codebooks and means, indices fixed (0: off)"
    )
    seed: int = 0
    activation_aware: bool = Field(
        False, description="weight k-means by calibration E[x_j^2] per input column (hessian_aware false only)"
    )
    include_embeddings: bool = Field(False, description="also quantize token embeddings / output head")
    dense_dtype: Literal["float16", "bfloat16", "float32"] = Field(
        "float16", description="storage of the tensors NOVAQ leaves dense"
    )
    teacher_model: str | None = Field(None, description="model spec of the teacher (default: the original)")
    refine: RefineConfig = Field(default_factory=RefineConfig)

    @property
    def index_bits_per_weight(self) -> float:  # (ceil log2 K1 + ceil log2 K2) / d, as codebook.index_bits
        bits = sum(math.ceil(math.log2(k)) for k in (self.codebook_size, self.residual_codebook_size) if k > 1)
        return bits / self.subspaces

    def to_dict(self) -> dict:
        return self.model_dump()
