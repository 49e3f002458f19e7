"""The base of every parameter model: unknown keys rejected, immutable, and errors that name the
parameter (``eval.windows must be >= 1 (got 0)``), so a bad value fails before any work starts.
Method configs (``prune/config.py``, ``heal/config.py``, ``lowrank/config.py``) and the groups in
``config.py`` all derive from :class:`Params`."""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, ValidationError

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
