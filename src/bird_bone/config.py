"""Parameter models: one pydantic model per top-level parameter group of ``conf/base``.

Unknown keys are rejected and every error names the parameter, e.g.
``eval.windows must be >= 1 (got 0)``, so a bad value fails before any work starts.
Kedro (>= 1.3) validates node inputs typed with these models when it builds the run.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from bird_bone.errors import BirdBoneError

_BOUNDS = {"greater_than_equal": ">=", "less_than_equal": "<=", "greater_than": ">", "less_than": "<"}


class ParameterError(BirdBoneError, ValueError):
    """A parameter has the wrong type, range or name."""


def describe_errors(section: str, exc: ValidationError) -> str:
    """One line per pydantic error, each naming the dotted parameter path."""
    lines = []
    for err in exc.errors():
        name = ".".join([section, *map(str, err["loc"])])
        ctx = err.get("ctx", {})
        if err["type"] in _BOUNDS:
            bound = next(iter(ctx.values()))
            lines.append(f"{name} must be {_BOUNDS[err['type']]} {bound} (got {err['input']!r})")
        elif err["type"] == "extra_forbidden":
            lines.append(f"{name} is not a known parameter")
        elif err["type"] == "missing":
            lines.append(f"{name} is required")
        else:
            lines.append(f"{name}: {err['msg']} (got {err['input']!r})")
    return "; ".join(lines)


class Params(BaseModel):
    """Base: forbid unknown keys, immutable, no NaN or infinity, errors that name the parameter."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)
    section: ClassVar[str] = ""

    @classmethod
    def model_validate(cls, obj: Any, **kwargs: Any):  # Kedro calls this to build typed params
        try:
            return super().model_validate(obj, **kwargs)
        except ValidationError as exc:
            raise ParameterError(describe_errors(cls.section or cls.__name__, exc)) from None


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


class StructuredParams(Params):
    fraction: float = Field(0.1, ge=0, lt=1, description="MLP neurons removed per wave, of the original width")
    max_fraction_per_cluster: float = Field(0.1, gt=0, le=1, description="cap per activation cluster per wave")
    clusters: int = Field(8, ge=1, description="k-means clusters of neurons per layer")
    pattern_tokens: int = Field(256, ge=8, description="calibration tokens a neuron's pattern spans")
    width_multiple: int = Field(1, ge=1, description="round kept MLP widths down to a multiple (e.g. 64, for GEMMs)")


class PruneParams(Params):
    section: ClassVar[str] = "prune"
    method: Literal["magnitude", "wanda", "sparsegpt", "structured"] = "wanda"
    target_sparsity: float = Field(0.5, ge=0, lt=1, description="sparsity of decoder linears after the last wave")
    waves: int = Field(1, ge=1, description="steps to reach the target (slow radius)")
    schedule: Literal["linear", "cubic"] = "linear"
    pattern: str = Field("unstructured", pattern=r"^(unstructured|[1-9][0-9]*:[1-9][0-9]*)$", description="or N:M")
    blocksize: int = Field(128, ge=1, description="SparseGPT columns per block")
    percdamp: float = Field(0.01, gt=0, description="SparseGPT dampening, fraction of mean diag(H)")
    true_sequential: bool | Literal["auto"] = Field(
        "auto",
        description="calibrate each linear on the pruned ones before it (one pass per layer); false: the reference "
        "order; auto: true-sequential except Wanda N:M",
    )
    prune_embeddings: bool = Field(False, description="also prune token embeddings (magnitude, per row)")
    save_gram: bool = Field(False, description="store X^T X per linear in the activation statistics (large)")
    structured: StructuredParams = Field(default_factory=StructuredParams)

    @property
    def nm(self) -> tuple[int, int]:
        if self.pattern == "unstructured":
            return 0, 0
        n, m = map(int, self.pattern.split(":"))
        return n, m

    @field_validator("pattern")
    @classmethod
    def _n_below_m(cls, value: str) -> str:
        if value != "unstructured" and not int(value.split(":")[0]) < int(value.split(":")[1]):
            raise ValueError(f"N:M pattern needs N < M, got {value}")
        return value


class HealParams(Params):
    section: ClassVar[str] = "heal"
    enabled: bool = Field(True, description="QLoRA micro-heal after each pruning wave")
    steps: int = Field(40, ge=0, description="optimiser steps per wave (the design: 200-500)")
    base: Literal["nf4", "full"] = Field("nf4", description="nf4: QLoRA (bitsandbytes 4-bit base); full: LoRA")
    rank: int = Field(8, ge=1, description="LoRA rank r")
    alpha: float = Field(16.0, gt=0, description="LoRA alpha (delta scaled by alpha / r)")
    dropout: float = Field(0.0, ge=0, lt=1)
    learning_rate: float = Field(3e-4, gt=0)
    target_modules: list[str] = Field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
        min_length=1,
        description="projection names that get LoRA adapters",
    )
    batch_size: int = Field(2, ge=1)
    window_length: int = Field(256, ge=2, description="tokens per training sequence, cut from calibration windows")
    kd_weight: float = Field(0.0, ge=0, description="weight of KL(teacher || student) to the dense model's logits")
    temperature: float = Field(2.0, gt=0, description="distillation temperature T")
    seed: int = 0


class RegrowParams(Params):
    section: ClassVar[str] = "regrow"
    enabled: bool = Field(True, description="RigL regrowth when pruning raised the loss by more than epsilon")
    epsilon: float = Field(0.05, ge=0, description="relative rise of calibration loss that triggers regrowth")
    max_fraction: float = Field(0.05, ge=0, le=1, description="share of each layer's pruned weights re-opened")
    windows: int = Field(4, ge=1, description="calibration windows for the loss check and the gradients")
    batch_size: int = Field(2, ge=1)


class StopLossParams(Params):
    section: ClassVar[str] = "stop_loss"
    enabled: bool = True
    max_ppl_increase: float = Field(0.03, ge=0, description="relative perplexity rise over the previous wave")
    patience: int = Field(2, ge=1, description="consecutive waves over the limit before reverting")


class LowRankParams(Params):
    section: ClassVar[str] = "lowrank"
    enabled: bool = Field(True, description="run the low-rank factorization stage after the waves")
    modules: list[str] = Field(
        default_factory=list,
        description="projection names to factorize (e.g. [o_proj]); empty: none, the stage only reports",
    )
    energy: float = Field(0.95, gt=0, le=1, description="share of (activation-weighted) spectral energy kept")
    activation_aware: bool = Field(True, description="scale input columns by calibration RMS (ASVD) before SVD")
    allow_masked: bool = Field(
        False, description="also factorize pruned projections (their mask is retired: the product is dense)"
    )


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


def parameter_models() -> dict[str, type[Params]]:
    """Each top-level parameter group (``section``) and the model that validates it."""
    models: dict[str, type[Params]] = {}
    stack = list(Params.__subclasses__())
    while stack:
        cls = stack.pop()
        stack.extend(cls.__subclasses__())
        if cls.__dict__.get("section"):
            models.setdefault(cls.section, cls)
    return models


def check_parameter_groups(parameters: Mapping[str, Any]) -> dict[str, Params]:
    """Validate every group of ``parameters`` by its model; a group no model knows is an error."""
    models = parameter_models()
    for name in sorted(set(parameters) - set(models)):
        close = difflib.get_close_matches(name, list(models), n=1)
        hint = f" (did you mean {close[0]}?)" if close else ""
        raise ParameterError(f"{name} is not a known parameter group{hint}; known: {', '.join(sorted(models))}")
    return {name: models[name].model_validate(value) for name, value in parameters.items()}
