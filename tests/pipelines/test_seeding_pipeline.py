"""The seeding pipeline through Kedro: a fast run on a tiny model, a bad parameter, and (slow) the
real `kedro run` command on the embedded model, each in a throw-away copy of the project."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bird_bone.io.checkpoint import Checkpoint, save_checkpoint
from tests.conftest import ROOT, TINY_TEXT
from tests.pipelines.conftest import run_session


def test_seeding_runs_on_a_tiny_model(project, tiny_model, tiny_tokenizer):
    save_checkpoint(Checkpoint(tiny_model, tiny_tokenizer), project / "tiny")
    (project / "text.txt").write_text(TINY_TEXT)
    run_session(
        project,
        {
            "model": {"source": str(project / "tiny")},
            "data": {
                "evaluation": {"source": str(project / "text.txt"), "fallback": None},
                "second_evaluation": {"source": str(project / "text.txt"), "fallback": None},
            },
            "eval": {"windows": 3, "window_length": 16, "tasks": []},
        },
    )
    report = json.loads((project / "data/08_reporting/report.json").read_text())
    assert report["model"]["kind"] == "local_dir"
    assert report["texts"]["evaluation"]["location"] == str(project / "text.txt")
    assert report["metrics"]["eval_predicted_tokens"] == 3 * 15
    assert 1.0 < report["metrics"]["perplexity"] < 2 * len(tiny_tokenizer)
    metrics = json.loads((project / "data/08_reporting/baseline_metrics.json").read_text())
    assert metrics["second_windows"] == 3  # the seed on the second text, which the export's budget judges
    assert metrics["second_perplexity"] == pytest.approx(metrics["perplexity"])  # the same text here
    seed = json.loads((project / "data/02_intermediate/seed.json").read_text())
    assert seed["parameters"]["eval"]["windows"] == 3 and len(seed["params_sha256"]) == 64
    assert set(seed["tensors"]) == set(tiny_model.state_dict())
    assert (project / "models/baseline/model.safetensors").is_file()
    assert "| perplexity |" in (project / "data/08_reporting/report.md").read_text()


def test_invalid_parameter_fails_before_any_node_names_it(project):
    from kedro.validation.exceptions import ParameterValidationError

    with pytest.raises(ParameterValidationError, match=r"eval\.windows must be >= 1 \(got 0\)"):
        run_session(project, {"eval": {"windows": 0}})
    assert not (project / "models" / "baseline").exists()


@pytest.mark.slow
def test_kedro_run_on_the_embedded_model(project):
    env = {**os.environ, "KEDRO_DISABLE_TELEMETRY": "true"}
    kedro = Path(sys.executable).with_name("kedro")
    shared = ROOT.parent / "shared"
    if (shared / "data").is_dir():
        os.symlink(shared, project.parent / "shared", target_is_directory=True)
    result = subprocess.run(
        [
            str(kedro),
            "run",
            "--params",
            "eval.windows=2,eval.task_limit=8,data.calibration.windows=4,heal.steps=3,heal.window_length=64,"
            "regrow.windows=1,prune.method=wanda,budget.max_ppl_increase=1000000",  # the unstructured loop, kept
        ],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads((project / "data/08_reporting/report.json").read_text())
    assert report["model"]["spec"] == "smollm2-135m" and "Q4_1" in report["model"]["description"]
    assert report["metrics"]["parameters"] == 134_515_008
    assert 10 < report["metrics"]["perplexity"] < 60
    assert report["lm_eval"]["bird_bone_canary"]["acc"] > 0.25
    assert "Q4_1" in (project / "data/08_reporting/report.md").read_text()
    # the default loop: two waves of Wanda to 50 % of the decoder linears, each regrown (at most 5 %) and healed
    records = [json.loads((project / f"data/08_reporting/waves/wave_{k}.json").read_text()) for k in (1, 2)]
    assert [r["heal"]["steps"] for r in records] == [3, 3]
    assert 0.2 < records[0]["sparsity"] <= 0.25 < 0.45 < records[1]["sparsity"] <= 0.5
    assert records[1]["perplexity"] > report["metrics"]["perplexity"]
    final = json.loads((project / "data/08_reporting/loop_metrics.json").read_text())
    # the final model's perplexity is that of the wave it is (or of the baseline, after a revert to it)
    assert final["waves"] == 2 and final["perplexity"] in {
        report["metrics"]["perplexity"],
        *(r["perplexity"] for r in records),
    }
    assert "| 2 |" in (project / "data/08_reporting/loop_report.md").read_text()
