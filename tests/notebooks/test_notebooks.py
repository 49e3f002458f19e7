"""The project's notebooks are stored without outputs and run headless against a small run."""

from __future__ import annotations

import nbformat
import pytest

from tests.notebook_runner import NOTEBOOKS, execute_notebook, outputs, text_of


@pytest.mark.parametrize("path", sorted(NOTEBOOKS.glob("*.ipynb")), ids=lambda p: p.name)
def test_notebooks_are_stored_without_outputs(path):
    notebook = nbformat.read(path, as_version=4)
    nbformat.validate(notebook)
    for cell in notebook.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, f"{path.name}: run nbstripout"


@pytest.mark.slow
def test_activations_notebook_draws_heatmaps_of_the_run(tiny_run, monkeypatch):
    notebook = execute_notebook("activations.ipynb", tiny_run, monkeypatch)
    assert str(tiny_run) in text_of(notebook)
    assert len(outputs(notebook, mime="image/png")) == 2  # projections figure, MLP neurons figure
    assert "2 decoder layers" in text_of(notebook)
    table = outputs(notebook, "execute_result", "text/html")[-1]["data"]["text/html"]
    assert "mlp.down_proj" in table and "self_attn.q_proj" in table


@pytest.mark.slow
def test_resources_notebook_tabulates_every_artifact(tiny_run, monkeypatch):
    notebook = execute_notebook("resources.ipynb", tiny_run, monkeypatch)
    table = outputs(notebook, "execute_result", "text/html")[0]["data"]["text/html"]
    for artifact in ("baseline", "pruned", "novaq"):
        assert f"<th>{artifact}</th>" in table, table
    assert len(outputs(notebook, mime="image/png")) == 2  # bits against perplexity, size and speed


@pytest.mark.slow
def test_notebook_fails_clearly_without_a_run(tmp_path, monkeypatch):
    from nbclient.exceptions import CellExecutionError

    with pytest.raises(CellExecutionError, match="no reports with a perplexity"):
        execute_notebook("resources.ipynb", tmp_path, monkeypatch)
