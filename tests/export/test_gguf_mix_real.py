"""Mixed-type GGUF export of the embedded SmolLM2-135M (Q4_1 weights dequantized): its Q4_1 linears and
Q8_0 embedding re-encode to the source bytes, a plan at the source's size keeps them, and a smaller plan
fits its budget and stays close to the source in llama.cpp (few windows: a smoke test, not a benchmark)."""

from __future__ import annotations

import gguf
import numpy as np
import pytest

from bird_bone.data.windows import evaluation_windows
from bird_bone.eval.llamacpp import llama_perplexity
from bird_bone.export.gguf_mixed import prepare
from bird_bone.models.loading import embedded_model_path

pytestmark = pytest.mark.slow


def test_smollm2_mixed_plans_keep_the_source_and_fit_their_budget(smollm2, wikitext_test_tokens, tmp_path):
    windows = evaluation_windows(wikitext_test_tokens, 256, 3)
    source = embedded_model_path("smollm2-135m")
    planner = prepare(smollm2.model, smollm2.tokenizer, windows[2:], tmp_path, template=source)
    kept_options = sum(any(c.kept for c in o.choices) for o in planner.options)
    assert kept_options >= 0.95 * len(planner.options)  # every tensor whose weights are the source's
    plan = planner.plan(source.stat().st_size)
    assert len(plan.kept) >= 0.95 * len(planner.options)
    path = planner.write(plan, tmp_path / "kept.gguf")
    written = {t.name: t for t in gguf.GGUFReader(path).tensors}
    for t in gguf.GGUFReader(source).tensors:
        if t.name in plan.kept:
            assert np.array_equal(np.asarray(written[t.name].data), np.asarray(t.data)), t.name
    reference = llama_perplexity(source, windows[:2], 2).perplexity
    assert llama_perplexity(path, windows[:2], 2).perplexity == pytest.approx(reference, rel=0.01)
    target = int(0.9 * source.stat().st_size)
    smaller = planner.write(planner.plan(target), tmp_path / "smaller.gguf")
    assert smaller.stat().st_size <= target
    assert llama_perplexity(smaller, windows[:2], 2).perplexity < 1.05 * reference
