"""The NOVAQ stage through Kedro on a tiny model: a sliced run from a saved baseline checkpoint
writes a valid NOVAQ directory (with the asked dense dtype) and its metrics, and a bad NOVAQ
parameter fails by name."""

from __future__ import annotations

import json

import pytest

import bird_bone.pipeline_registry as registry
from bird_bone.export.novaq_read import validate_novaq
from bird_bone.io.checkpoint import Checkpoint, save_checkpoint
from bird_bone.pipelines.novaq.pipeline import create_pipeline
from tests.conftest import TINY_TEXT, make_tiny_llama
from tests.pipelines.conftest import run_session  # the `project` fixture comes from conftest.py


@pytest.fixture
def with_novaq(monkeypatch):
    """Register the novaq pipeline (the project registry adds it when the stage is integrated)."""
    original = registry.register_pipelines

    def register():
        pipelines = original()
        pipelines.setdefault("novaq", create_pipeline())
        return pipelines

    monkeypatch.setattr(registry, "register_pipelines", register)


def tiny_params(root) -> dict:
    text = str(root / "text.txt")
    return {
        "data": {"evaluation": {"source": text, "fallback": None}, "calibration": {"source": text, "fallback": None}},
        "eval": {"windows": 2, "window_length": 16, "tasks": []},
        "novaq": {
            "kmeans_iterations": 3,
            "dense_dtype": "float32",
            "refine": {"max_iterations": 2, "calibration_windows": 2, "window_length": 16},
        },
    }


def test_pipeline_has_the_baseline_as_its_only_dataset_input():
    pipeline = create_pipeline()
    assert pipeline.inputs() == {"seeding.baseline_checkpoint", "params:data", "params:eval", "params:novaq"}
    assert {"novaq.novaq_model", "novaq.novaq_metrics", "novaq.novaq_report"} <= pipeline.all_outputs()


def test_sliced_novaq_run_on_a_tiny_model(project, with_novaq, tiny_tokenizer):  # noqa: F811
    save_checkpoint(Checkpoint(make_tiny_llama(len(tiny_tokenizer)), tiny_tokenizer), project / "models/baseline")
    (project / "text.txt").write_text(TINY_TEXT)
    run_session(project, tiny_params(project), pipeline="novaq")
    summary = validate_novaq(project / "models/novaq")
    assert summary["tensors"] > 14 and summary["max_logit_difference"] <= 1e-2
    manifest = json.loads((project / "models/novaq/manifest.json").read_text())
    assert manifest["tensors"]["model.norm.weight"]["dtype"] == "float32"  # novaq.dense_dtype reached the writer
    report = json.loads((project / "data/08_reporting/novaq_report.json").read_text())
    assert report["novaq"]["kmeans_iterations"] == 3 and len(report["refinement"]["losses"]) == 2
    assert report["accounting"]["total_bits_per_weight"] < 16
    metrics = json.loads((project / "data/08_reporting/novaq_metrics.json").read_text())
    assert metrics["perplexity"]["predicted_tokens"] == 2 * 15
    assert 1.0 < metrics["perplexity"]["perplexity"] < 10 * len(tiny_tokenizer)


def test_invalid_novaq_parameter_fails_by_name(project, with_novaq):  # noqa: F811
    from kedro.validation.exceptions import ParameterValidationError

    with pytest.raises(ParameterValidationError, match=r"novaq\.codebook_size must be >= 2 \(got 1\)"):
        run_session(project, {"novaq": {"codebook_size": 1}}, pipeline="novaq")
    assert not (project / "models" / "novaq").exists()
