"""The resources table: every reporting JSON with a perplexity becomes one row, whatever its nesting;
a report without a size gets its checkpoint's size on disk."""

from __future__ import annotations

import json

import pytest
import torch

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


def test_loop_waves_and_lowrank_rows_follow_checkpoint_links_and_skip_masks(tmp_path):
    from safetensors.torch import save_file

    reports = tmp_path / "data/08_reporting"
    (reports / "waves").mkdir(parents=True)
    (reports / "loop_metrics.json").write_text(json.dumps({"perplexity": 40.0, "sparsity": 0.5, "waves": 2}))
    for k, ppl in ((1, 35.0), (2, 40.0)):
        (reports / f"waves/wave_{k}.json").write_text(json.dumps({"wave": k, "perplexity": ppl, "sparsity": k / 4}))
    (reports / "waves/wave_3.json").write_text(json.dumps({"wave": 3, "status": "skipped"}))  # no row
    (reports / "lowrank_report.json").write_text(json.dumps({"enabled": True, "factorized": {}}))  # pass-through
    wave2 = tmp_path / "models/waves/wave_2"
    wave2.mkdir(parents=True)
    save_file({"w": torch.zeros(10, 10), "b": torch.zeros(10)}, wave2 / "model.safetensors")
    save_file({"w": torch.zeros(10, 10, dtype=torch.bool)}, wave2 / "masks.safetensors")
    for link in ("models/loop_final", "models/compressed"):
        (tmp_path / link).mkdir(parents=True)
        (tmp_path / link / "bird_bone_link.json").write_text(json.dumps({"link": "waves/wave_2"}))

    rows = {row["artifact"]: row for row in collect_resources(tmp_path)}
    assert list(rows) == ["loop", "lowrank", "wave_1", "wave_2"]
    weights = (wave2 / "model.safetensors").stat().st_size
    assert rows["loop"]["bytes"] == weights and rows["loop"]["parameters"] == 110  # masks not counted
    assert rows["loop"]["sparsity"] == 0.5 and rows["wave_1"]["file"] == "waves/wave_1.json"
    assert rows["lowrank"]["perplexity"] == 40.0 and rows["lowrank"]["bytes"] == weights
    assert rows["wave_1"]["bytes"] is None and rows["wave_2"]["bytes"] == weights
