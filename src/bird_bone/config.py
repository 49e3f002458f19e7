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

import difflib
from collections.abc import Mapping
from typing import Any, ClassVar, Literal

from pydantic import Field, model_validator

from bird_bone.heal.config import HealParams, RegrowParams, StopLossParams
from bird_bone.lowrank.config import LowRankParams
from bird_bone.params import ParameterError, Params, describe_errors
from bird_bone.prune.config import PruneParams, StructuredParams
from bird_bone.quant.config import NovaqConfig

__all__ = [
    "BudgetParams",
    "CalibrationParams",
    "DataParams",
    "EvalParams",
    "ExportParams",
    "HealParams",
    "LowRankParams",
    "ModelParams",
    "NovaqConfig",
    "ParameterError",
    "Params",
    "PruneParams",
    "RegrowParams",
    "StopLossParams",
    "StructuredParams",
    "TextParams",
    "check_parameter_groups",
    "describe_errors",
    "parameter_models",
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
    second_evaluation: TextParams | None = Field(
        None, description="a second domain reported beside the evaluation text (None: not reported)"
    )


class BudgetParams(Params):
    section: ClassVar[str] = "budget"
    max_ppl_increase: float = Field(
        0.03, gt=0, description="relative perplexity rise allowed over the seed model, on the evaluation text"
    )
    target_bytes: int | None = Field(None, ge=1, description="size the exported file aims at (None: smallest)")
    target_bpw: float | None = Field(None, gt=0, le=32, description="bits per weight the export aims at")

    @model_validator(mode="after")
    def _one_target(self):
        if self.target_bytes is not None and self.target_bpw is not None:
            raise ValueError("set budget.target_bytes or budget.target_bpw, not both")
        return self


class EvalParams(Params):
    section: ClassVar[str] = "eval"
    windows: int = Field(8, ge=1, description="non-overlapping evaluation windows (papers: all of them)")
    window_length: int = Field(512, ge=2, description="tokens per window (papers: 2048)")
    batch_size: int = Field(4, ge=1)
    throughput_batches: int = Field(2, ge=1, description="batches timed for tokens/s")
    tasks: list[str] = Field(default_factory=lambda: ["bird_bone_canary"], description="lm-eval tasks")
    task_limit: int | None = Field(None, ge=1, description="examples per lm-eval task (None: all)")


class ExportParams(Params):
    section: ClassVar[str] = "export"
    type: Literal["mixed", "F32", "F16", "BF16", "Q8_0", "Q4_0", "Q4_K_M", "Q3_K_M", "Q2_K", "IQ2_XXS"] = Field(
        "mixed", description="GGUF type; mixed: a llama.cpp type per tensor, the smallest file within the budget"
    )
    name: str | None = Field(None, description="general.name in the file (None: the model's); path: the catalog's")
    imatrix: bool = Field(True, description="feed the activation statistics to llama.cpp as importance matrix")
    eval_windows: int = Field(2, ge=0, description="evaluation windows scored in llama.cpp for the report (0: none)")
    pre_tokenizer: str | None = Field(None, description="llama.cpp pre-tokenizer name (None: from the tokenizer)")
    threads: int = Field(0, ge=0, description="llama.cpp threads (0: all cores)")
    sensitivity_windows: int = Field(8, ge=1, description="mixed: calibration windows the sensitivity is measured on")
    search_steps: int = Field(
        4, ge=0, description="mixed: bisection steps over byte budgets (one llama.cpp scoring each)"
    )
    search_windows: int | None = Field(
        None, ge=1, description="mixed: evaluation windows each candidate is scored on (None: all, as the seed was)"
    )
    throughput: bool = Field(True, description="time prompt and generation tokens/s in llama.cpp, input and output")
    rounding: Literal["gptq", "imatrix"] = Field(
        "imatrix", description="mixed: llama.cpp's own per-block rounding, or GPTQ error feedback into each block grid"
    )


def parameter_models() -> dict[str, type[Params]]:
    """Each top-level parameter group (``section``) and the model that validates it."""
    models: dict[str, type[Params]] = {}
    stack = list(Params.__subclasses__())
    while stack:
        cls = stack.pop()
        stack.extend(cls.__subclasses__())
        if cls.__dict__.get("section") and "." not in cls.section:  # "novaq.refine" is nested, not a group
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
