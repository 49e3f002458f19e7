"""The resources table: every reporting JSON with a perplexity becomes one row, whatever its nesting;
a report without a size gets its checkpoint's size on disk."""

from __future__ import annotations

import json

import pytest

from bird_bone.eval.resources import collect_resources


def test_rows_from_flat_nested_and_sizeless_reports(tmp_path):
    reports = tmp_path / "data/08_reporting"
    reports.mkdir(parents=True)
    baseline = {"perplexity": 30.6, "bytes_on_disk": 1000, "bits_per_weight": 8.0, "tokens_per_second": 50.0}
    (reports / "baseline_metrics.json").write_text(json.dumps({**baseline, "parameters": 1000}))
    novaq = {"perplexity": {"perplexity": 90.0}, "statistics": {"total_bits_per_weight": 2.1, "bits_per_weight": 9}}
    (reports / "novaq_metrics.json").write_text(json.dumps(novaq))
    (reports / "pruned_metrics.json").write_text(json.dumps({"perplexity": 60.0, "parameters": 100}))
    (reports / "export_report.json").write_text(
        json.dumps({"llama_cpp_perplexity": {"perplexity": 31.0}, "bytes": 500})
    )
    (reports / "prune_report.json").write_text(json.dumps({"pruned": {"perplexity": 60.0}}))  # a summary, not a row
    (reports / "lm_eval_metrics.json").write_text(json.dumps({"acc": 0.9}))  # no perplexity: no row
    pruned = tmp_path / "models/pruned"
    pruned.mkdir(parents=True)
    (pruned / "model.safetensors").write_bytes(b"x" * 400)
    (pruned / "config.json").write_text("{}")

    rows = {row["artifact"]: row for row in collect_resources(tmp_path)}
    assert sorted(rows) == ["baseline", "export", "novaq", "pruned"]
    assert rows["baseline"]["bits_per_weight"] == 8.0 and rows["baseline"]["tokens_per_second"] == 50.0
    assert rows["novaq"]["perplexity"] == 90.0 and rows["novaq"]["bits_per_weight"] == 2.1  # whole-file bits first
    assert rows["export"]["perplexity"] == 31.0 and rows["export"]["bytes"] == 500
    assert rows["pruned"]["bytes"] == 400 and rows["pruned"]["bits_per_weight"] == pytest.approx(32.0)
    assert rows["novaq"]["tokens_per_second"] is None
