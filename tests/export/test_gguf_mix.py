"""Mixed-type GGUF export on a tiny random LLaMA whose rows fit every llama.cpp type (256 wide):
ggml_quant writes llama.cpp's bytes, the planner keeps to its budget and improves with it, planned
types are in the file, kept source tensors are byte-identical, the budget search picks the smallest
passing file, and the sensitivity of a tied embedding has both parts."""

from __future__ import annotations

import gguf
import numpy as np
import pytest
import torch

from bird_bone.errors import ArtifactError
from bird_bone.export import ggml_quant
from bird_bone.export.gguf import write_gguf
from bird_bone.export.gguf_mix import allocate, read_matrices
from bird_bone.export.gguf_mix_write import check_types, quantize_plan
from bird_bone.export.gguf_mixed import prepare, search
from bird_bone.export.sensitivity import measure_sensitivity

TYPES = ["Q4_K", "IQ4_XS", "Q5_0", "Q2_K", "Q6_K", "IQ3_S", "Q4_1", "Q3_K", "IQ4_NL", "Q8_0"]


def wide_llama(vocab: int):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=vocab, hidden_size=256, intermediate_size=512, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
                         tie_word_embeddings=True, bos_token_id=1, eos_token_id=2, pad_token_id=2)  # fmt: skip
    return LlamaForCausalLM(config).eval()


@pytest.fixture(scope="module")
def model(tiny_tokenizer):
    return wide_llama(len(tiny_tokenizer))


@pytest.fixture(scope="module")
def windows(tiny_tokenizer):
    return torch.randint(3, len(tiny_tokenizer), (4, 48), generator=torch.Generator().manual_seed(0))


@pytest.fixture(scope="module")
def planner(model, tiny_tokenizer, windows, tmp_path_factory):
    return prepare(model, tiny_tokenizer, windows[:2], tmp_path_factory.mktemp("mix"))


def test_ggml_quant_writes_the_bytes_llama_cpp_writes(tmp_path, model, tiny_tokenizer):
    f32 = write_gguf(model, tiny_tokenizer, tmp_path / "f32.gguf", "F32").path
    matrices = read_matrices(f32)
    plan = {name: TYPES[i % len(TYPES)] for i, name in enumerate(sorted(matrices))}
    rng = np.random.default_rng(0)
    imatrix = {name: rng.random(w.shape[1]).astype(np.float32) + 0.1 for name, w in matrices.items()}
    quantize_plan(f32, tmp_path / "mixed.gguf", plan, imatrix)
    written = {t.name: t for t in gguf.GGUFReader(tmp_path / "mixed.gguf").tensors}
    for name, type in plan.items():
        assert written[name].tensor_type.name == type
        ours = ggml_quant.quantize(matrices[name], type, imatrix[name])
        assert np.array_equal(np.asarray(written[name].data).view(np.uint8).reshape(ours.shape), ours), name
    with pytest.raises(ArtifactError, match="blk.0.attn_k.weight was written as"):
        check_types(tmp_path / "mixed.gguf", {**plan, "blk.0.attn_k.weight": "F16"})


def test_round_trip_error_falls_with_bits_and_imatrix_matters():
    w = np.random.default_rng(0).standard_normal((16, 256)).astype(np.float32)
    errors = [float(np.square(ggml_quant.round_trip(w, t) - w).mean()) for t in ("Q2_K", "Q3_K", "Q4_K", "Q6_K")]
    assert errors == sorted(errors, reverse=True)
    weights = np.linspace(0.01, 10, 256).astype(np.float32)
    plain, weighted = (ggml_quant.round_trip(w, "Q3_K", i) - w for i in (None, weights))
    assert (np.square(weighted) * weights).sum() < (np.square(plain) * weights).sum()
    with pytest.raises(ArtifactError, match="do not split into Q4_K blocks"):
        ggml_quant.quantize(w[:, :96], "Q4_K")


def test_tied_embedding_sensitivity_has_head_and_input_parts(model, windows):
    found = measure_sensitivity(model, windows[:1])
    embed = found["model.embed_tokens.weight"]
    assert "lm_head.weight" not in found and embed.rows.shape == (model.config.vocab_size,)
    seen = np.zeros(model.config.vocab_size, bool)
    seen[windows[0].numpy()] = True
    assert (embed.elements[~seen] == 0).all() and (embed.elements[seen].sum(1) > 0).all()
    q = found["model.layers.1.self_attn.q_proj.weight"]
    error = np.random.default_rng(0).standard_normal((256, 256))
    assert q.loss(2 * error) == pytest.approx(4 * q.loss(error)) and q.loss(error) > 0
    assert all(p.requires_grad for p in model.parameters())  # left as found


def test_planner_keeps_to_the_budget_and_improves_as_it_grows(planner, tmp_path):
    lo, hi = planner.bounds()
    losses = []
    for target in np.linspace(lo, hi, 6).astype(int):
        plan = planner.plan(int(target))
        path = planner.write(plan, tmp_path / "plan.gguf")
        assert path.stat().st_size <= target and plan.tensor_bytes <= target - planner.fixed_bytes
        losses.append(plan.loss)
    assert losses == sorted(losses, reverse=True) and losses[-1] < losses[0] / 10
    assert planner.plan(hi).counts == {"Q8_0": 15}  # everything at the lowest error
    with pytest.raises(ArtifactError, match="below the smallest plan"):
        allocate(planner.options, lo - planner.fixed_bytes - 1)


def test_kept_source_tensors_are_byte_identical(tmp_path, tiny_tokenizer, windows):
    model = wide_llama(len(tiny_tokenizer))
    with torch.no_grad():  # weights on the Q4_1 grid (blocks run along rows: the q/k row permutation keeps them)
        for p in model.parameters():
            if p.ndim == 2:
                p.copy_(torch.from_numpy(ggml_quant.round_trip(p.detach().numpy(), "Q4_1")))
    f32 = write_gguf(model, tiny_tokenizer, tmp_path / "f32.gguf", "F32").path
    source = quantize_plan(f32, tmp_path / "source.gguf", {n: "Q4_1" for n in read_matrices(f32)})
    work = tmp_path / "work"
    work.mkdir()
    planner = prepare(model, tiny_tokenizer, windows[:1], work, template=source)
    assert all(any(c.kept for c in o.choices) for o in planner.options)
    plan = planner.plan(source.stat().st_size + planner.fixed_bytes)
    assert plan.counts == {"Q4_1 (kept)": 15} and plan.loss == 0
    written = {t.name: t for t in gguf.GGUFReader(planner.write(plan, tmp_path / "out.gguf")).tensors}
    for t in gguf.GGUFReader(source).tensors:
        assert np.array_equal(np.asarray(written[t.name].data), np.asarray(t.data)), t.name


def test_budget_search_picks_the_smallest_passing_file(planner, tmp_path):
    lo, hi = planner.bounds()
    threshold = (lo + 2 * hi) // 3

    def score(path) -> float:  # a perplexity that falls with the real file's size: passes above the threshold
        return 10.0 * (1.0 + 0.01 * (path.stat().st_size < threshold))

    result = search(planner, score, seed_perplexity=10.0, max_increase=0.005, out=tmp_path, steps=6)
    assert result.meets and result.chosen.bytes >= threshold
    assert all(not c.meets for c in result.candidates if c.bytes < result.chosen.bytes)
    assert result.chosen.bytes - max(c.bytes for c in result.candidates if not c.meets) < (hi - lo) / 32
    assert [p.name for p in tmp_path.iterdir()] == [f"mixed-{result.chosen.target_bytes}.gguf"]
    (tmp_path / "none").mkdir()
    failing = search(planner, lambda path: 99.0, 10.0, 0.03, tmp_path / "none", steps=2)
    assert not failing.meets and "no plan meets" in failing.reason and len(failing.candidates) == 1


def test_budget_search_holds_on_every_text(planner, tmp_path):
    lo, hi = planner.bounds()
    threshold = (lo + 2 * hi) // 3

    def score(path) -> dict[str, float]:  # the evaluation text always passes; the second fails below the threshold
        return {"evaluation": 10.0, "second": 5.0 * (1.0 + 0.01 * (path.stat().st_size < threshold))}

    result = search(planner, score, {"evaluation": 10.0, "second": 5.0}, 0.005, tmp_path, steps=6)
    assert result.meets and result.chosen.bytes >= threshold
    assert result.chosen.perplexities == {"evaluation": 10.0, "second": 5.0}
    assert all(not c.meets for c in result.candidates if c.bytes < threshold)
    assert "second 5.025" in result.reason  # the second text's ceiling is stated


def test_budget_search_scores_each_distinct_plan_once(planner, tmp_path):
    lo, hi = planner.bounds()
    threshold = (lo + 2 * hi) // 3
    scored = []

    def score(path) -> float:
        scored.append(path.stat().st_size)
        return 10.0 * (1.0 + 0.01 * (path.stat().st_size < threshold))

    # 12 bisection steps over a tiny model's few distinct plans: many targets give the same plan
    result = search(planner, score, seed_perplexity=10.0, max_increase=0.005, out=tmp_path, steps=12)
    assert len(scored) == len(set(scored)) == len(result.candidates)
    assert len(scored) < 14  # the largest plan, the smallest, and 12 steps without the repeats
    assert result.meets and result.chosen.bytes >= threshold
    assert [p.name for p in tmp_path.iterdir()] == [result.path.rsplit("/", 1)[-1]]
