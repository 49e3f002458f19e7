"""Kedro runs in a throw-away copy of the project's configuration."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from tests.conftest import ROOT

os.environ.setdefault("KEDRO_DISABLE_TELEMETRY", "true")


@pytest.fixture
def project(tmp_path, monkeypatch):
    """A copy of the project's configuration in tmp_path, as the working directory."""
    shutil.copy(ROOT / "pyproject.toml", tmp_path)
    shutil.copytree(ROOT / "conf", tmp_path / "conf", ignore=shutil.ignore_patterns("local"))
    (tmp_path / "conf" / "local").mkdir()
    (tmp_path / "src").mkdir()  # bird_bone itself is installed (editable) in the venv
    monkeypatch.chdir(tmp_path)
    return tmp_path


def run_session(project: Path, params: dict, pipeline: str | list[str] = "seeding"):
    from kedro.framework.session import KedroSession
    from kedro.framework.startup import bootstrap_project

    bootstrap_project(project)
    with KedroSession.create(project_path=project, runtime_params=params) as session:
        return session.run(pipeline_names=[pipeline] if isinstance(pipeline, str) else pipeline)
