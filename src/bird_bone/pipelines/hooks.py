"""Project hooks: what a run checks and prepares before its first node, and the wave count.

- :class:`WaveCountHook`: Kedro builds pipelines before it knows run parameters, but the loop has one
  namespace per wave: this hook reads ``prune.waves`` (``--params`` included) from the config loader
  as soon as the context exists, before the pipelines are first built.
- :class:`ParameterCheckHook`: every parameter group is validated by its model when the context is
  created, so a misspelt group (``stoploss.enabled``) or a misspelt key of a group the chosen pipeline
  does not use fails before any work, as Kedro's own validation does for the groups nodes take; and once
  the model is loaded, an N:M pattern is checked against every width before the baseline is written.
- :class:`StaleTemporariesHook`: removes what killed writes left in ``data/`` and ``models/``.
"""

from __future__ import annotations

from pathlib import Path

from kedro.framework.hooks import hook_impl
from kedro.validation.exceptions import ParameterValidationError

from bird_bone.config import ParameterError, PruneParams, check_parameter_groups
from bird_bone.io.atomic import remove_stale_temporaries

# OmegaConfigLoader arguments (settings.py): ``soft`` merges conf/local (and --params) into conf/base
# key by key; Kedro's default, ``destructive``, replaces a whole group, so a conf/local with only
# ``prune.method`` silently reset ``prune.waves`` to the model's default.
CONFIG_LOADER_ARGS = {"base_env": "base", "default_run_env": "local", "merge_strategy": {"parameters": "soft"}}
ARTIFACT_DIRECTORIES = ("data", "models")

_WAVES: dict[str, int] = {}


class WaveCountHook:
    @hook_impl
    def after_context_created(self, context) -> None:
        waves = context.config_loader["parameters"].get("prune", {}).get("waves")
        if isinstance(waves, int) and waves >= 1:
            _WAVES["count"] = waves


def wave_count(conf_source: str | Path = "conf") -> int:
    """``prune.waves`` of this run (from the hook), else of conf/base + conf/local, else 1."""
    if "count" in _WAVES:
        return _WAVES["count"]
    from kedro.config import OmegaConfigLoader

    if Path(conf_source).is_dir():
        try:
            waves = OmegaConfigLoader(str(conf_source), **CONFIG_LOADER_ARGS)["parameters"]
            waves = waves.get("prune", {}).get("waves", 1)
            if isinstance(waves, int) and waves >= 1:
                return waves
        except Exception:  # a broken config is reported by Kedro itself when the run starts
            pass
    return 1


class ParameterCheckHook:
    def __init__(self) -> None:
        self._nm: tuple[int, int] = (0, 0)
        self._checked = False

    @hook_impl
    def after_context_created(self, context) -> None:
        try:
            validated = check_parameter_groups(context.config_loader["parameters"])
        except ParameterError as exc:  # the error Kedro's own validation of node parameters raises
            raise ParameterValidationError(f"Parameter validation failed:\n- {exc}") from exc
        prune = validated.get("prune")
        self._nm = prune.nm if isinstance(prune, PruneParams) else (0, 0)
        self._checked = False

    @hook_impl
    def after_node_run(self, node, outputs: dict) -> None:
        """The first model a run loads meets the N:M pattern before any node saves it."""
        if self._checked or not any(self._nm):
            return
        # here, not at the top: settings.py imports this module for every `kedro` command, and these
        # pull in torch and transformers, which only a run needs
        from bird_bone.io.checkpoint import Checkpoint
        from bird_bone.prune.layerwise import check_pattern

        for value in outputs.values():
            if isinstance(value, Checkpoint):
                self._checked = True
                try:
                    check_pattern(value.model, *self._nm)
                except ValueError as exc:
                    raise ParameterError(f"prune.pattern: {exc}; choose an M that divides every width") from None
                return


class StaleTemporariesHook:
    def __init__(self) -> None:
        self._root: Path | None = None

    @hook_impl
    def after_context_created(self, context) -> None:
        self._root = Path(context.project_path)

    @hook_impl
    def before_pipeline_run(self) -> None:
        for name in ARTIFACT_DIRECTORIES if self._root else ():
            remove_stale_temporaries(self._root / name)
