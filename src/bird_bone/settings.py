"""Kedro project settings. Parameters are validated from node type hints and, all of them, by
:class:`~bird_bone.pipelines.hooks.ParameterCheckHook`; ``kedro run`` itself is bird-bone's
(``bird_bone.pipelines.cli``: one-line errors)."""

import warnings

from kedro.config import OmegaConfigLoader

from bird_bone.pipelines.hooks import CONFIG_LOADER_ARGS, ParameterCheckHook, StaleTemporariesHook, WaveCountHook

CONFIG_LOADER_CLASS = OmegaConfigLoader
# conf/local and --params merge into conf/base key by key (see hooks.CONFIG_LOADER_ARGS)
CONFIG_LOADER_ARGS = CONFIG_LOADER_ARGS

HOOKS = (WaveCountHook(), ParameterCheckHook(), StaleTemporariesHook())

# Dataset names are `<stage>.<noun>` on purpose (namespaced pipelines, STYLE.md); Kedro warns on every run.
warnings.filterwarnings("ignore", message="One or more dataset names contain '.'", category=UserWarning)
