"""`kedro run` ends a bad run with one clear line, not a traceback wall (issue 17, item 1).

Each case runs the real `kedro` in a throw-away copy of the project on the tiny model."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.tiny_project import tool_env, write_tiny_project

KEDRO = str(Path(sys.executable).parent / "kedro")


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    return write_tiny_project(tmp_path_factory.mktemp("project"))


def kedro_run(project: Path, *args: str) -> subprocess.CompletedProcess:
    env = tool_env(COLUMNS="160")
    return subprocess.run([KEDRO, "run", *args], cwd=project, env=env, capture_output=True, text=True, timeout=300)


def error_lines(done: subprocess.CompletedProcess) -> list[str]:
    return (done.stdout + done.stderr).strip().splitlines()


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--params", "eval.windows=0"], "Error: eval.windows must be >= 1 (got 0)"),
        (["--params", "stoploss.enabled=false"], "Error: stoploss is not a known parameter group"),
        (["--pipelines", "seeding", "--params", "model.source=missing/dir/model.gguf"],
         "Error: model file or directory not found: missing/dir/model.gguf"),
        (["--pipelines", "seeding", "--params", "prune.pattern=2:5"], "Error: prune.pattern: model.layers.0"),
    ],
)  # fmt: skip
def test_a_user_error_ends_the_run_in_two_lines_naming_the_field_or_file(project, args, expected):
    done = kedro_run(project, *args)
    lines = error_lines(done)
    assert done.returncode == 1, lines
    assert lines[-2].startswith(expected) and "--verbose" in lines[-1], lines[-4:]
    assert not any("Traceback" in line or "│" in line for line in lines), lines
    assert len(lines) <= 15, lines  # Kedro's own start-up lines and the two of the error
    assert not (project / "models" / "baseline").exists()  # nothing was written before the check


def test_verbose_shows_the_traceback(project):
    done = kedro_run(project, "--verbose", "--params", "eval.windows=0")
    assert done.returncode != 0 and "Traceback" in done.stdout + done.stderr
    assert "eval.windows must be >= 1" in done.stdout + done.stderr


def test_check_validates_the_readme_n_m_command_and_writes_nothing(project):
    done = kedro_run(project, "--check", "--params", "prune.method=sparsegpt,prune.pattern=2:4,heal.kd_weight=1.0")
    assert done.returncode == 0, error_lines(done)
    assert error_lines(done)[-1] == "configuration and parameters are valid"
    assert not (project / "data").exists() and not (project / "models" / "baseline").exists()
