"""Parameter models: one pydantic model per top-level parameter group of ``conf/base``.

Unknown keys are rejected and every error names the parameter, e.g.
``eval.windows must be >= 1 (got 0)``, so a bad value fails before any work starts.
Kedro (>= 1.3) validates node inputs typed with these models when it builds the run.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

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
    """Base: forbid unknown keys, immutable, errors that name the parameter."""

    model_config = ConfigDict(extra="forbid", frozen=True)
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


class DataParams(Params):
    section: ClassVar[str] = "data"
    calibration: TextParams
    evaluation: TextParams


class EvalParams(Params):
    section: ClassVar[str] = "eval"
    windows: int = Field(8, ge=1, description="non-overlapping evaluation windows (papers: all of them)")
    window_length: int = Field(512, ge=2, description="tokens per window (papers: 2048)")
    batch_size: int = Field(4, ge=1)
    throughput_batches: int = Field(2, ge=1, description="batches timed for tokens/s")
    tasks: list[str] = Field(default_factory=lambda: ["bird_bone_canary"], description="lm-eval tasks")
    task_limit: int | None = Field(None, ge=1, description="examples per lm-eval task (None: all)")
