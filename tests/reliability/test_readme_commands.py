"""Every `kedro run` command the README shows parses and validates as written (issue 17, item 2):
the command's own options (bird-bone's `run`, which keeps `2:4` a string), Kedro's config loader over
conf/ with the run's parameters, every parameter group's model, and the pipeline names."""

from __future__ import annotations

import re
import shlex

import pytest

from bird_bone.config import check_parameter_groups
from tests.conftest import ROOT

COMMANDS = [
    line.split("#")[0].strip()
    for line in (ROOT / "README.md").read_text().splitlines()
    if re.match(r"^\s*[^\s`]*kedro run\b", line)  # a command line, not prose
]


def test_the_readme_shows_commands():
    assert len(COMMANDS) >= 8 and any("prune.pattern=2:4" in c for c in COMMANDS)


@pytest.mark.parametrize("command", COMMANDS)
def test_readme_command_parses_and_validates(command):
    from kedro.config import OmegaConfigLoader

    from bird_bone.pipeline_registry import register_pipelines
    from bird_bone.pipelines.cli import run
    from bird_bone.pipelines.hooks import CONFIG_LOADER_ARGS

    words = shlex.split(command)
    args = run.make_context("run", words[words.index("run") + 1 :]).params
    loader = OmegaConfigLoader(str(ROOT / "conf"), **CONFIG_LOADER_ARGS, runtime_params=args["params"])
    validated = check_parameter_groups(loader["parameters"])
    for dotted, value in _flatten(args["params"]):
        group, *keys = dotted.split(".")
        model = validated[group]
        for key in keys:
            model = getattr(model, key)
        assert model == value, f"{dotted}: {model!r} != {value!r}"
    names = [args["pipeline"]] if args["pipeline"] else args["pipelines"] or ["__default__"]
    assert set(names) <= set(register_pipelines())


def _flatten(tree: dict, prefix: str = ""):
    for key, value in tree.items():
        if isinstance(value, dict):
            yield from _flatten(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value
