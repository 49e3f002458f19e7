"""The GGUF export stage through Kedro on a tiny model: a run from a saved checkpoint, activation
statistics and evaluation windows writes a GGUF llama.cpp loads and a report; bad parameters fail by name."""

from __future__ import annotations

import json

import pytest
import torch

from bird_bone.export.gguf import describe_gguf
from bird_bone.io.checkpoint import Checkpoint, save_checkpoint
from bird_bone.io.tensors import save_tensors
from bird_bone.pipelines.export.pipeline import create_pipeline
from tests.conftest import TINY_TEXT, make_tiny_llama
from tests.pipelines.conftest import run_session  # the `project` fixture comes from conftest.py


def test_pipeline_inputs_and_outputs():
    pipeline = create_pipeline()
    assert pipeline.inputs() == {
        "compressed_model",
        "prune.activation_statistics",
        "prune.calibration_windows",
        "seeding.evaluation_windows",
        "seeding.baseline_metrics",
        "params:data",
        "params:export",
        "params:budget",
        "seeding.second_evaluation_windows",
    }
    assert pipeline.all_outputs() == {"export.gguf_model", "export.mixed_search", "export.export_report"}


def _stage_inputs(project, tokenizer) -> None:
    model = make_tiny_llama(len(tokenizer))
    save_checkpoint(Checkpoint(model, tokenizer, {"stage": "prune"}), project / "models/compressed")
    stats = {
        f"{name}.input_sq_norms": torch.rand(m.in_features) + 0.1
        for name, m in model.named_modules()
        if isinstance(m, torch.nn.Linear) and name.startswith("model.layers.")
    }
    save_tensors(stats, project / "data/03_primary/activation_statistics.safetensors")
    ids = tokenizer(TINY_TEXT, add_special_tokens=False)["input_ids"][:96]
    save_tensors(
        {"windows": torch.tensor(ids).view(3, 32)}, project / "data/02_intermediate/evaluation_windows.safetensors"
    )
    save_tensors(
        {"windows": torch.tensor(ids[:64]).view(2, 32)},
        project / "data/02_intermediate/calibration_windows.safetensors",
    )
    save_tensors(
        {"windows": torch.tensor(ids[32:96]).view(2, 32)},
        project / "data/02_intermediate/second_evaluation_windows.safetensors",
    )
    (project / "data/08_reporting").mkdir(parents=True, exist_ok=True)
    metrics = {"perplexity": 50.0, "second_perplexity": 40.0}
    (project / "data/08_reporting/baseline_metrics.json").write_text(json.dumps(metrics))


def test_export_run_on_a_tiny_model(project, tiny_tokenizer):  # noqa: F811
    _stage_inputs(project, tiny_tokenizer)
    params = {"export": {"type": "Q4_K_M", "eval_windows": 2, "threads": 2, "name": "tiny"}}
    run_session(project, params, pipeline="export")
    written = describe_gguf(project / "models/export.gguf")
    assert written.type == "Q4_K_M" and written.bits_per_weight < 16
    report = json.loads((project / "data/08_reporting/export_report.json").read_text())
    assert report["type"] == "Q4_K_M" and report["imatrix"] is True
    assert report["size_bytes"] == (project / "models/export.gguf").stat().st_size
    ppl = report["llama_cpp_perplexity"]
    assert (
        ppl["windows"] == 2 and ppl["predicted_tokens"] == 2 * 31 and 1.0 < ppl["perplexity"] < 10 * len(tiny_tokenizer)
    )


def test_mixed_export_run_reports_the_budget_search(project, tiny_tokenizer):  # noqa: F811
    _stage_inputs(project, tiny_tokenizer)
    params = {"export": {"type": "mixed", "eval_windows": 1, "threads": 2, "search_steps": 1},
              "budget": {"max_ppl_increase": 100.0}}  # fmt: skip
    run_session(project, params, pipeline="export")
    report = json.loads((project / "data/08_reporting/export_report.json").read_text())
    mixed = report["mixed"]
    assert mixed["seed_perplexity"] == 50.0 and mixed["budget"]["max_ppl_increase"] == 100.0
    assert mixed["seed_perplexities"] == {"evaluation": 50.0, "second": 40.0}  # judged on both texts
    assert all(set(c["perplexities"]) == {"evaluation", "second"} for c in mixed["candidates"])
    assert mixed["meets"] and len(mixed["candidates"]) >= 2 and "smallest" in mixed["reason"]
    assert mixed["chosen"]["bytes"] == report["size_bytes"] == min(c["bytes"] for c in mixed["candidates"])
    assert report["type"] == "mixed" and sum(report["tensor_types"].values()) == 20


def test_unknown_export_type_fails_by_name(project):  # noqa: F811
    from kedro.validation.exceptions import ParameterValidationError

    with pytest.raises(ParameterValidationError, match=r"export\.type"):
        run_session(project, {"export": {"type": "Q5_X"}}, pipeline="export")
    assert not (project / "models" / "export.gguf").exists()


def test_the_node_quantizes_and_the_dataset_only_moves_the_file_and_keeps_its_summary(tmp_path, tiny_tokenizer):
    from bird_bone.config import BudgetParams, DataParams, ExportParams
    from bird_bone.pipelines.export.datasets import GGUFDataset
    from bird_bone.pipelines.export.nodes import quantize_gguf

    checkpoint = Checkpoint(make_tiny_llama(len(tiny_tokenizer)), tiny_tokenizer, {"stage": "prune"})
    data = DataParams(calibration={"source": "x", "windows": 2, "window_length": 16}, evaluation={"source": "x"})
    windows = torch.zeros(1, 8, dtype=torch.long)
    staged, mixed = quantize_gguf(
        checkpoint, {}, windows, windows, {}, data, ExportParams(type="F16", imatrix=False), BudgetParams()
    )
    assert mixed == {"sparsity_warning": None, "input_gguf": None}  # dense, not loaded from a GGUF file
    assert staged.staged.is_file() and staged.summary.type == "F16"  # the work is done in the node
    dataset = GGUFDataset(filepath=str(tmp_path / "models/export.gguf"))
    dataset.save(staged)
    assert not staged.staged.parent.exists()  # the staging directory is gone
    loaded = dataset.load()
    assert loaded.path == str(tmp_path / "models/export.gguf") and loaded.size_bytes == staged.summary.size_bytes
    assert loaded.vocab == staged.summary.vocab != {}  # the node's summary, not a new description of the file
    assert describe_gguf(loaded.path).size_bytes == loaded.size_bytes
    assert sorted(p.name for p in (tmp_path / "models").iterdir()) == ["export.gguf"]
