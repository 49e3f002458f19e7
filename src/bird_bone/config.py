"""Parameter models: one pydantic model per top-level parameter group of ``conf/base``, gathered
here. The groups shared by every stage (model, data, eval) and those of modules without a config
of their own are defined here; each method's config lives beside the method (``prune/config.py``,
``heal/config.py``, ``lowrank/config.py``) and is re-exported. The base class is in
:mod:`bird_bone.params`.

Unknown keys are rejected and every error names the parameter, e.g.
``eval.windows must be >= 1 (got 0)``, so a bad value fails before any work starts.
Kedro (>= 1.3) validates node inputs typed with these models when it builds the run.
"""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field

from bird_bone.heal.config import HealParams, RegrowParams, StopLossParams
from bird_bone.lowrank.config import LowRankParams
from bird_bone.params import ParameterError, Params, describe_errors
from bird_bone.prune.config import PruneParams, StructuredParams

__all__ = [
    "CalibrationParams",
    "DataParams",
    "EvalParams",
    "ExportParams",
    "HealParams",
    "LowRankParams",
    "ModelParams",
    "NovaqParams",
    "NovaqRefineParams",
    "ParameterError",
    "Params",
    "PruneParams",
    "RegrowParams",
    "StopLossParams",
    "StructuredParams",
    "TextParams",
    "describe_errors",
]


class ModelParams(Params):
    section: ClassVar[str] = "model"
    source: str = Field("smollm2-135m", description="embedded name, HF directory, GGUF file or hub id")
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"


class TextParams(Params):
    source: str = Field(description="'embedded', a local text file, or a Hugging Face dataset id")
    fallback: str | None = Field("embedded", description="used when source is a local path that is missing")
    split: str = "test"
    column: str = "text"
    config_name: str | None = None


class CalibrationParams(TextParams):
    windows: int = Field(32, ge=1, description="random calibration windows (the papers: 128 x 2048)")
    window_length: int = Field(512, ge=2)
    seed: int = Field(0, description="random.seed of the window sampler, as in the Wanda/SparseGPT code")
    batch_size: int = Field(4, ge=1, description="windows per forward chunk in layer-wise calibration")


class DataParams(Params):
    section: ClassVar[str] = "data"
    calibration: CalibrationParams
    evaluation: TextParams


class EvalParams(Params):
    section: ClassVar[str] = "eval"
    windows: int = Field(8, ge=1, description="non-overlapping evaluation windows (papers: all of them)")
    window_length: int = Field(512, ge=2, description="tokens per window (papers: 2048)")
    batch_size: int = Field(4, ge=1)
    throughput_batches: int = Field(2, ge=1, description="batches timed for tokens/s")
    tasks: list[str] = Field(default_factory=lambda: ["bird_bone_canary"], description="lm-eval tasks")
    task_limit: int | None = Field(None, ge=1, description="examples per lm-eval task (None: all)")


class NovaqRefineParams(Params):
    enabled: bool = Field(True, description="run stage 3, teacher-guided refinement of the codebooks")
    max_iterations: int = Field(50, ge=0)
    learning_rate: float = Field(1e-3, gt=0)
    temperature: float = Field(1.0, gt=0, description="T of KL(p_teacher || p_student)")
    kl_weight: float = Field(1.0, ge=0)
    cosine_weight: float = Field(0.1, ge=0, description="lambda of sum over layers (1 - cos(h_t, h_s))")
    tune_scales: bool = Field(True, description="also tune per-row means and row scales")
    calibration_windows: int = Field(32, ge=1)
    window_length: int = Field(256, ge=2)
    batch_size: int = Field(1, ge=1)
    seed: int = 0


class NovaqParams(Params):
    section: ClassVar[str] = "novaq"
    subspaces: int = Field(4, ge=1, le=64, description="weights per sub-vector")
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
    activation_aware: bool = Field(False, description="weight k-means by calibration E[x_j^2] per input column")
    include_embeddings: bool = Field(False, description="also quantize token embeddings / output head")
    dense_dtype: Literal["float16", "bfloat16", "float32"] = "float16"
    teacher_model: str | None = Field(None, description="model spec of the teacher (default: the original)")
    refine: NovaqRefineParams = Field(default_factory=NovaqRefineParams)


class ExportParams(Params):
    section: ClassVar[str] = "export"
    type: Literal["F32", "F16", "BF16", "Q8_0", "Q4_0", "Q4_K_M", "Q3_K_M", "Q2_K", "IQ2_XXS"] = Field(
        "Q4_K_M", description="GGUF type; K- and I-quants go through llama.cpp's quantizer"
    )
    name: str | None = Field(None, description="general.name in the file (None: the model's); path: the catalog's")
    imatrix: bool = Field(True, description="feed the activation statistics to llama.cpp as importance matrix")
    eval_windows: int = Field(2, ge=0, description="evaluation windows scored in llama.cpp for the report (0: none)")
    pre_tokenizer: str | None = Field(None, description="llama.cpp pre-tokenizer name (None: from the tokenizer)")
    threads: int = Field(0, ge=0, description="llama.cpp threads (0: all cores)")
