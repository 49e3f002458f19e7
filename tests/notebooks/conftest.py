"""A small finished run for notebook tests: the tiny-model project after `kedro run` (seeding and
pruning, two waves) and `kedro run --pipeline novaq`, built once per test session."""

from __future__ import annotations

import pytest

from tests.tiny_project import run_tool, write_tiny_project


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    run = write_tiny_project(tmp_path_factory.mktemp("run"))
    run_tool(run, "kedro", "run", "--params", "prune.waves=2,prune.target_sparsity=0.6", timeout=900)
    run_tool(run, "kedro", "run", "--pipeline", "novaq", timeout=900)
    return run
