"""``kedro run`` for bird-bone: Kedro's own command, with three changes.

Kedro lets a project replace a built-in command from ``<package>/cli.py`` (its ``cli`` group
overrides the built-ins, see ``KedroCLI.project_groups``); ``bird_bone.cli`` exports this one.

1. An error the user can cause (a :class:`~bird_bone.errors.BirdBoneError` anywhere in the chain, or
   Kedro's own parameter validation) ends the run with one line naming the field, file or tensor and
   a hint, exit status 1. Kedro's rich traceback of an already clear message is about 150 lines; it,
   and Kedro's log lines that repeat the message, come back with ``--verbose`` (or a ``kedro`` logger
   at DEBUG). Any other exception is a bug and keeps its full traceback.
2. ``--params prune.pattern=2:4`` means the string ``2:4``: Kedro parses values as YAML 1.1, which
   reads ``2:4`` as the base-60 integer 124, so an N:M value is quoted before it is parsed; and a
   list value, ``eval.tasks=[a,b]``, is one item (Kedro splits it at its comma).
3. ``--check`` loads the configuration and validates every parameter (what a run does before its first
   node) and stops there: nothing is loaded or written.
"""

from __future__ import annotations

import logging
import re
import sys
from typing import Any

import click
from kedro.framework.cli.project import run as kedro_run
from kedro.framework.project import settings
from omegaconf import OmegaConf

from bird_bone.errors import BirdBoneError

_RATIO = re.compile(r"^(?P<key>[^=]+=)\s*(?P<value>\d+\s*:\s*\d+)\s*$")
_KEDRO_PREFIX = re.compile(r"Parameter '[^']+': (Failed to instantiate \w+ for parameter '[^']+': )?")
HINT = "(kedro run --verbose shows the traceback)"


def split_items(value: str) -> list[str]:
    """``a=1,b=[x,y]`` -> ``["a=1", "b=[x,y]"]``: split at the commas outside brackets."""
    items, depth, start = [], 0, 0
    for i, char in enumerate(value):
        depth += (char in "[{") - (char in "]}")
        if char == "," and depth == 0:
            items.append(value[start:i])
            start = i + 1
    return [item.strip() for item in [*items, value[start:]] if item.strip()]


def quote_ratios(value: str) -> str:
    """``a=2:4,b=1`` -> ``a='2:4',b=1``: N:M values stay strings through Kedro's YAML parsing."""
    return ",".join(_RATIO.sub(lambda m: f"{m['key']}'{m['value'].replace(' ', '')}'", i) for i in split_items(value))


def _params_callback(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
    """Kedro's ``--params`` parsing (``OmegaConf.from_dotlist``), one item per top-level comma."""
    if not isinstance(value, str):
        return value
    for item in split_items(value):
        if "=" not in item or not item.partition("=")[0].strip():
            ctx.fail(f"Invalid format of `params` option: Item `{item}` must be KEY=VALUE.")
    dotlist = [f"{k.strip()}={v}" for k, _, v in (i.partition("=") for i in split_items(quote_ratios(value)))]
    return OmegaConf.to_container(OmegaConf.from_dotlist(dotlist))


def user_error(exc: BaseException) -> str | None:
    """The one-line message of an error the user caused, or None for anything else (a bug)."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, BirdBoneError):
            return " ".join(str(current).split())
        if type(current).__name__ == "ParameterValidationError":  # kedro.validation, wraps ours as text
            lines = [line.removeprefix("- ") for line in str(current).splitlines()[1:] if line.strip()]
            return " ".join(_KEDRO_PREFIX.sub("", " ".join(lines)).split())
        if isinstance(current, ValueError) and str(current).startswith("Failed to find the pipeline named"):
            return " ".join(str(current).split())
        current = current.__cause__ or current.__context__
    return None


class _HeldBack(logging.Filter):
    """Holds back Kedro's error records (they repeat the exception's message) until the run ends."""

    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        repeats = record.name.startswith("kedro") and (
            record.levelno >= logging.ERROR or "nodes that have not run" in message or "No nodes ran" in message
        )
        if repeats:
            self.records.append(record)
        return not repeats


def _handlers() -> list[logging.Handler]:
    return [h for h in logging.getLogger().handlers if not isinstance(h, logging.NullHandler)]


def _verbose_logging() -> bool:
    return logging.getLogger("kedro").isEnabledFor(logging.DEBUG)


def check_run(env: str | None, conf_source: str | None, params: dict[str, Any], pipelines: list[str]) -> None:
    """Load the configuration and validate every parameter and the pipelines named, running nothing."""
    from kedro.framework.project import pipelines as registered

    with settings.SESSION_CLASS.create(env=env, conf_source=conf_source, runtime_params=params) as session:
        context = session.load_context()
        for name in pipelines or ["__default__"]:
            if name not in registered:
                raise ValueError(f"Failed to find the pipeline named '{name}'. Known: {', '.join(sorted(registered))}")
        context.params  # noqa: B018 (Kedro's validation of typed node parameters)
    click.echo("configuration and parameters are valid")


def _run(verbose: bool, check: bool, **kwargs: Any) -> Any:
    held = _HeldBack()
    verbose = verbose or _verbose_logging()
    handlers = [] if verbose else _handlers()
    for handler in handlers:
        handler.addFilter(held)

    def release() -> None:
        for handler in handlers:
            handler.removeFilter(held)

    try:
        if check:
            names = [kwargs["pipeline"]] if kwargs["pipeline"] else list(kwargs["pipelines"])
            return check_run(kwargs["env"], kwargs["conf_source"], kwargs["params"], names)
        return kedro_run.callback(**kwargs)
    except Exception as exc:
        release()
        message = None if verbose else user_error(exc)
        if message is None:
            for record in held.records:
                logging.getLogger(record.name).handle(record)
            raise
        click.secho(f"Error: {message}", fg="red", err=True)
        click.echo(HINT, err=True)
        sys.exit(1)
    finally:
        release()


def _options() -> list[click.Parameter]:
    options = []
    for option in kedro_run.params:
        if option.name == "params":
            option = click.Option(["--params"], type=click.UNPROCESSED, default="", help=option.help,
                                  callback=_params_callback)  # fmt: skip
        options.append(option)
    options.append(click.Option(["--verbose", "-v"], is_flag=True, help="Show full tracebacks of errors."))
    options.append(
        click.Option(["--check"], is_flag=True, help="Validate configuration and parameters, then stop (runs nothing).")
    )
    return options


run = click.Command("run", callback=_run, params=_options(), help=kedro_run.help, short_help="Run the pipeline.")
