"""Kedro project settings. Defaults are kept; parameters are validated from node type hints."""

from kedro.config import OmegaConfigLoader

from bird_bone.pipelines.hooks import WaveCountHook

CONFIG_LOADER_CLASS = OmegaConfigLoader
CONFIG_LOADER_ARGS = {"base_env": "base", "default_run_env": "local"}

HOOKS = (WaveCountHook(),)
