"""Execute a project notebook headless with nbclient against a run directory, the way a user would
open it: the kernel starts in notebooks/, reads BIRD_BONE_RUN_DIR, imports this checkout's bird_bone.
Shared by every notebook test (tests/notebooks/)."""

from __future__ import annotations

import nbformat
from nbclient import NotebookClient

from tests.conftest import ROOT
from tests.tiny_project import tool_env

NOTEBOOKS = ROOT / "notebooks"


def execute_notebook(name: str, run_dir, monkeypatch, timeout: int = 300):
    """Run notebooks/<name> on ``run_dir``; returns the executed notebook (a cell error raises)."""
    for key, value in tool_env(BIRD_BONE_RUN_DIR=str(run_dir)).items():
        monkeypatch.setenv(key, value)  # the kernel inherits this process's environment
    notebook = nbformat.read(NOTEBOOKS / name, as_version=4)
    client = NotebookClient(
        notebook, timeout=timeout, kernel_name="python3", resources={"metadata": {"path": str(NOTEBOOKS)}}
    )
    client.execute()
    return notebook


def outputs(notebook, output_type: str | None = None, mime: str | None = None) -> list:
    """Every output of every code cell, optionally of one type and carrying one MIME type."""
    found = [out for cell in notebook.cells if cell.cell_type == "code" for out in cell.get("outputs", [])]
    if output_type:
        found = [out for out in found if out.output_type == output_type]
    if mime:
        found = [out for out in found if mime in out.get("data", {})]
    return found


def text_of(notebook) -> str:
    """All text and text/plain outputs, joined."""
    parts = []
    for out in outputs(notebook):
        parts.append(out.get("text", ""))
        parts.append(out.get("data", {}).get("text/plain", ""))
    return "\n".join(parts)
