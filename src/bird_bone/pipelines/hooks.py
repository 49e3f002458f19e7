"""Project hooks. Kedro builds pipelines before it knows run parameters, but the loop has one
namespace per wave: this hook reads ``prune.waves`` (``--params`` included) from the config loader
as soon as the context exists, before the pipelines are first built."""

from __future__ import annotations

from pathlib import Path

from kedro.framework.hooks import hook_impl

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
            waves = OmegaConfigLoader(str(conf_source), base_env="base", default_run_env="local")["parameters"]
            waves = waves.get("prune", {}).get("waves", 1)
            if isinstance(waves, int) and waves >= 1:
                return waves
        except Exception:  # a broken config is reported by Kedro itself when the run starts
            pass
    return 1
