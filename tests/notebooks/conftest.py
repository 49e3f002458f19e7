"""A small finished run for notebook tests: the tiny-model project after the default `kedro run`
(seeding, activations, a growth-prune-heal loop of two waves of two heal steps, low-rank), one-shot
pruning (`--pipeline prune`, the "pruned" artifact) and NOVAQ, built once per test session."""

from __future__ import annotations

import pytest

from tests.tiny_project import run_tool, write_tiny_project

# unstructured waves (masks) kept by a wide budget: the notebooks draw masks, which structured pruning has none of
PARAMS = "prune.waves=2,prune.target_sparsity=0.6,prune.method=wanda,budget.max_ppl_increase=1000000"


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    run = write_tiny_project(tmp_path_factory.mktemp("run"))  # heal.steps=2 (tests/tiny_project.py)
    run_tool(run, "kedro", "run", "--params", PARAMS, timeout=900)
    run_tool(run, "kedro", "run", "--pipeline", "prune", "--from-nodes", "prune.prune_model", "--params", PARAMS)
    run_tool(run, "kedro", "run", "--pipeline", "novaq", timeout=900)
    return run
