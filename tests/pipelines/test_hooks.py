"""The wave count reaches pipeline construction: from the run's parameters, else from conf/."""

from __future__ import annotations

from bird_bone.pipelines import hooks
from bird_bone.pipelines.loop.pipeline import create_pipeline


def test_wave_count_reads_conf_when_no_run_has_set_it(tmp_path, monkeypatch):
    monkeypatch.setattr(hooks, "_WAVES", {})
    (tmp_path / "base").mkdir()
    (tmp_path / "local").mkdir()
    (tmp_path / "base" / "parameters_prune.yml").write_text("prune:\n  waves: 3\n")
    assert hooks.wave_count(tmp_path) == 3
    assert hooks.wave_count(tmp_path / "missing") == 1


def test_the_hook_value_wins(monkeypatch):
    monkeypatch.setattr(hooks, "_WAVES", {"count": 5})
    assert hooks.wave_count("nowhere") == 5


def test_one_namespace_per_wave_plus_the_baseline_and_the_report():
    pipeline = create_pipeline(4)
    namespaces = {node.namespace for node in pipeline.nodes}
    assert namespaces == {"heal", "wave_0", "wave_1", "wave_2", "wave_3", "wave_4", "loop"}  # heal: its text
    assert "wave_4.checkpoint" in pipeline.all_outputs() and "wave_5.checkpoint" not in pipeline.all_outputs()
