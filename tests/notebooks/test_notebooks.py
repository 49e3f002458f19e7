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
    for artifact in ("baseline", "pruned", "novaq", "loop", "wave_1", "wave_2", "lowrank"):
        assert f"<th>{artifact}</th>" in table, table
    assert "<th>wave_3</th>" not in table and "<th>sparsity</th>" in table
    assert len(outputs(notebook, mime="image/png")) == 2  # bits against perplexity, size and speed


@pytest.mark.slow
def test_healing_notebook_shows_every_wave_curves_and_sparsity_map(tiny_run, monkeypatch):
    import json

    notebook = execute_notebook("healing.ipynb", tiny_run, monkeypatch)
    text = text_of(notebook)
    assert str(tiny_run) in text and "over 2 waves" in text and "2 waves with masks" in text
    table = outputs(notebook, "execute_result", "text/html")[0]["data"]["text/html"]
    records = [json.loads((tiny_run / f"data/08_reporting/waves/wave_{k}.json").read_text()) for k in (1, 2)]
    rows = table.split("<tbody>")[1].split("</tbody>")[0].count("<tr>")
    assert rows == 2, table  # one row per wave
    for record in records:
        assert f"<th>{record['wave']}</th>" in table and record["status"] in table
    assert len(outputs(notebook, mime="image/png")) == 2  # healing curves, sparsity map


@pytest.mark.slow
def test_notebook_fails_clearly_without_a_run(tmp_path, monkeypatch):
    from nbclient.exceptions import CellExecutionError

    with pytest.raises(CellExecutionError, match="no reports with a perplexity"):
        execute_notebook("resources.ipynb", tmp_path, monkeypatch)
