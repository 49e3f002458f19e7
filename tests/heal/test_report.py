"""The loop report's heading says what each wave removes: MLP neurons for structured pruning (no
mask sparsity target or pattern applies), the sparsity target and pattern for mask methods."""

from __future__ import annotations

from bird_bone.heal.report import render_loop_report
from bird_bone.prune.config import PruneParams


def report(**prune) -> dict:
    return {
        "prune": PruneParams(**prune).model_dump(),
        "baseline_perplexity": 30.0,
        "eval_windows": 8,
        "model": "tiny",
        "heal": {"enabled": True, "steps": 4, "base": "nf4", "rank": 8, "kd_weight": 1.0},
        "stop_loss": {"enabled": True, "max_ppl_increase": 0.03, "patience": 2},
        "waves": [],
        "final": {"wave": 0, "status": "dense baseline", "sparsity": 0.0, "perplexity": 30.0},
    }


def test_structured_heading_names_neurons_not_a_sparsity_target():
    heading = render_loop_report(report(method="structured")).splitlines()[0]
    assert "structured (MLP neurons, 10% of the MLP width per wave) over 1 wave(s)" in heading
    assert "unstructured" not in heading and "target sparsity" not in heading


def test_mask_heading_names_target_and_pattern():
    heading = render_loop_report(report(method="wanda", pattern="2:4")).splitlines()[0]
    assert "wanda (2:4), target sparsity" in heading
