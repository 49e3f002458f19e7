"""GGUF export of tiny random LLaMA models, checked in a real llama.cpp runtime (llama-cpp-python):
logits match transformers, tokenization matches, tied/untied heads, ragged MLP widths, the importance
matrix lowers the weighted quantization error, and bad input fails by name."""

from __future__ import annotations

import gguf
import numpy as np
import pytest
import torch

from bird_bone.errors import ArtifactError
from bird_bone.eval.llamacpp import llama_logits, llama_perplexity, load_llama
from bird_bone.eval.perplexity import perplexity
from bird_bone.export.gguf import describe_gguf, permute_for_rope, write_gguf
from bird_bone.export.imatrix import ImatrixEntry, importance_matrix, read_imatrix, write_imatrix
from bird_bone.export.llamacpp_quantize import export_gguf, quantize_gguf
from bird_bone.models.adapters import resize_mlps
from tests.conftest import TINY_TEXT, make_tiny_llama


def hf_logits(model, ids: list[int]) -> np.ndarray:
    with torch.no_grad():
        return model(torch.tensor([ids])).logits[0].float().numpy()


def gguf_logits(path, ids: list[int]) -> np.ndarray:
    llm = load_llama(path, n_ctx=64, threads=2)
    try:
        return llama_logits(llm, ids)
    finally:
        llm.close()


@pytest.fixture
def ids(tiny_tokenizer) -> list[int]:
    return tiny_tokenizer(TINY_TEXT[:160], add_special_tokens=False)["input_ids"][:40]


def test_rope_permutation_interleaves_the_two_halves_of_each_head():
    w = torch.arange(8.0).repeat_interleave(3).reshape(8, 3)  # 2 heads of 4 rows, row r holds r
    assert permute_for_rope(w, 2)[:, 0].tolist() == [0, 2, 1, 3, 4, 6, 5, 7]


def test_f32_logits_match_transformers(tmp_path, tiny_model, tiny_tokenizer, ids):
    result = write_gguf(tiny_model, tiny_tokenizer, tmp_path / "tiny.gguf", "F32")
    names = {t.name for t in gguf.GGUFReader(result.path).tensors}
    assert "output.weight" not in names and {"token_embd.weight", "blk.1.ffn_down.weight"} <= names  # tied head
    assert result.architecture == "llama" and result.bits_per_weight == 32.0
    assert np.abs(gguf_logits(result.path, ids) - hf_logits(tiny_model, ids)).max() < 1e-3


def test_untied_head_is_written_and_used(tmp_path, tiny_tokenizer, ids):
    model = make_tiny_llama(len(tiny_tokenizer))
    model.config.tie_word_embeddings = False
    model.lm_head.weight = torch.nn.Parameter(torch.randn_like(model.lm_head.weight) * 0.05)
    path = write_gguf(model, tiny_tokenizer, tmp_path / "untied.gguf", "F32").path
    assert "output.weight" in {t.name for t in gguf.GGUFReader(path).tensors}
    assert np.abs(gguf_logits(path, ids) - hf_logits(model, ids)).max() < 1e-3


def test_ragged_mlp_widths_export_as_deci_and_match(tmp_path, tiny_tokenizer, ids):
    model = make_tiny_llama(len(tiny_tokenizer), layers=3)
    resize_mlps(model, [64, 32, 48])
    result = write_gguf(model, tiny_tokenizer, tmp_path / "ragged.gguf", "F32")
    reader = gguf.GGUFReader(result.path)
    assert result.architecture == "deci"
    assert list(reader.fields["deci.feed_forward_length"].contents()) == [64, 32, 48]
    assert np.abs(gguf_logits(result.path, ids) - hf_logits(model, ids)).max() < 1e-3


@pytest.mark.parametrize(("type", "tolerance", "bits"), [("F16", 0.02, 16), ("BF16", 0.1, 16), ("Q8_0", 0.1, 8.5)])
def test_reduced_types_run_close_to_transformers(tmp_path, tiny_model, tiny_tokenizer, ids, type, tolerance, bits):
    result = write_gguf(tiny_model, tiny_tokenizer, tmp_path / f"{type}.gguf", type)
    assert result.tensor_types[type] == 15 and result.tensor_types["F32"] == 5  # norms stay F32
    assert bits < result.bits_per_weight < bits + 0.7
    assert np.abs(gguf_logits(result.path, ids) - hf_logits(tiny_model, ids)).max() < tolerance


def test_llama_cpp_tokenizes_like_the_tokenizer(tmp_path, tiny_model, tiny_tokenizer):
    path = write_gguf(tiny_model, tiny_tokenizer, tmp_path / "tiny.gguf", "Q4_0").path
    llm = load_llama(path, n_ctx=64)
    text = "The bird sat on the log. 42 bones grew where they were loaded!"
    try:
        assert llm.tokenize(text.encode(), add_bos=False) == tiny_tokenizer(text, add_special_tokens=False)["input_ids"]
    finally:
        llm.close()
    fields = gguf.GGUFReader(path).fields
    assert fields["tokenizer.ggml.pre"].contents() == "gpt-2" and fields["tokenizer.ggml.eos_token_id"].contents() == 2


def test_llama_cpp_perplexity_matches_transformers(tmp_path, tiny_model, tiny_tokenizer):
    windows = torch.tensor(tiny_tokenizer(TINY_TEXT, add_special_tokens=False)["input_ids"][:96]).view(3, 32)
    path = write_gguf(tiny_model, tiny_tokenizer, tmp_path / "tiny.gguf", "F32").path
    ours, theirs = llama_perplexity(path, windows), perplexity(tiny_model, windows, progress=False)
    assert ours.predicted_tokens == theirs.predicted_tokens == 3 * 31
    assert ours.perplexity == pytest.approx(theirs.perplexity, rel=1e-4)


def _wide_model(vocab: int):
    """Rows of 256 columns: llama.cpp's K- and I-quants need whole 256-wide super-blocks."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=vocab, hidden_size=256, intermediate_size=256, num_hidden_layers=1,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                         tie_word_embeddings=True, bos_token_id=1, eos_token_id=2)  # fmt: skip
    return LlamaForCausalLM(config).eval()


def _skewed_statistics(model) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    stats = {}
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Linear) and name.startswith("model.layers."):
            sq = torch.rand(module.in_features, generator=g)
            sq[torch.randperm(module.in_features, generator=g)[:16]] *= 1e4  # a few loud input columns
            stats[f"{name}.input_sq_norms"] = sq * 100
    return stats


def _weighted_error(path, model, imatrix) -> float:
    """sum over the layer's matrices of sum_j E[x_j^2] (W - Q(W))_ij^2, Q(W) read back from the file."""
    tensors = {t.name: t for t in gguf.GGUFReader(path).tensors}
    reference = {"blk.0.attn_v.weight": model.model.layers[0].self_attn.v_proj.weight,
                 "blk.0.ffn_down.weight": model.model.layers[0].mlp.down_proj.weight}  # fmt: skip
    total = 0.0
    for name, weight in reference.items():
        t = tensors[name]
        restored = gguf.quants.dequantize(t.data, t.tensor_type).reshape(weight.shape)
        total += float(((weight.detach().numpy() - restored) ** 2 * imatrix[name].mean).sum())
    return total


def test_importance_matrix_lowers_the_weighted_error_of_k_and_i_quants(tmp_path, tiny_tokenizer):
    model = _wide_model(len(tiny_tokenizer))
    imatrix = importance_matrix(_skewed_statistics(model), model, tokens=100)
    assert set(imatrix) >= {"blk.0.attn_q.weight", "blk.0.ffn_down.weight"} and len(imatrix) == 7
    source = write_gguf(model, tiny_tokenizer, tmp_path / "f32.gguf", "F32").path
    plain = quantize_gguf(source, tmp_path / "q2k.gguf", "Q2_K")
    weighted = quantize_gguf(source, tmp_path / "q2k-imatrix.gguf", "Q2_K", imatrix)
    assert _weighted_error(weighted, model, imatrix) < 0.8 * _weighted_error(plain, model, imatrix)
    with pytest.raises(ArtifactError, match="IQ2_XXS needs an importance matrix"):
        quantize_gguf(source, tmp_path / "iq2.gguf", "IQ2_XXS")
    result = export_gguf(model, tiny_tokenizer, tmp_path / "iq2.gguf", "IQ2_XXS", imatrix)
    assert result.type == "IQ2_XXS" and "IQ2_XXS" in result.tensor_types and result.bits_per_weight < 8
    assert describe_gguf(tmp_path / "iq2.gguf").type == "IQ2_XXS"
    ids = tiny_tokenizer(TINY_TEXT[:100], add_special_tokens=False)["input_ids"][:20]
    assert np.isfinite(gguf_logits(result.path, ids)).all()


def test_imatrix_file_round_trips(tmp_path):
    entries = {"blk.0.attn_q.weight": ImatrixEntry(np.arange(8, dtype=np.float32), 64.0)}
    path = write_imatrix(tmp_path / "imatrix.gguf", entries, chunk_size=32, datasets=["wiki"])
    back = read_imatrix(path)
    assert np.array_equal(back["blk.0.attn_q.weight"].sums, entries["blk.0.attn_q.weight"].sums)
    assert back["blk.0.attn_q.weight"].count == 64.0
    fields = gguf.GGUFReader(path).fields
    assert fields["general.type"].contents() == "imatrix" and fields["imatrix.chunk_count"].contents() == 2


def test_stale_statistics_are_left_out_of_the_importance_matrix(tiny_model):
    stats = _skewed_statistics(tiny_model)
    stats["model.layers.0.mlp.down_proj.input_sq_norms"] = torch.ones(7)  # width before structured pruning
    assert "blk.0.ffn_down.weight" not in importance_matrix(stats, tiny_model)
    with pytest.raises(ArtifactError, match="model.layers.9.mlp.up_proj.input_sq_norms names no linear"):
        importance_matrix({"model.layers.9.mlp.up_proj.input_sq_norms": torch.ones(32)}, tiny_model)


def test_bad_input_fails_by_name(tmp_path, tiny_model, tiny_tokenizer):
    from transformers import GPT2Config, GPT2LMHeadModel

    with pytest.raises(ArtifactError, match="unknown GGUF type 'Q5_X'"):
        write_gguf(tiny_model, tiny_tokenizer, tmp_path / "x.gguf", "Q5_X")
    gpt2 = GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=32, n_head=2, vocab_size=300))
    with pytest.raises(ArtifactError, match="GPT2LMHeadModel .*is not supported; supported: llama"):
        write_gguf(gpt2, tiny_tokenizer, tmp_path / "x.gguf")
    del tiny_model.model.layers[1].post_attention_layernorm
    with pytest.raises(ArtifactError, match=r"missing tensor model\.layers\.1\.post_attention_layernorm\.weight"):
        write_gguf(tiny_model, tiny_tokenizer, tmp_path / "x.gguf")
    assert not list(tmp_path.iterdir())  # nothing half-written


def test_novaq_directory_exports_dequantized(tmp_path, tiny_model, tiny_tokenizer, ids):
    from bird_bone.export.novaq_format import write_novaq
    from bird_bone.export.novaq_read import read_novaq
    from bird_bone.quant.novaq import NovaqConfig, quantize_model

    config = NovaqConfig(codebook_size=8, residual_codebook_size=4, kmeans_iterations=3)
    write_novaq(tmp_path / "novaq", tiny_model, tiny_tokenizer, quantize_model(tiny_model, config, progress=False),
                config.to_dict())  # fmt: skip
    dequantized, tokenizer, _ = read_novaq(tmp_path / "novaq")
    path = write_gguf(dequantized, tokenizer, tmp_path / "novaq.gguf", "F32").path
    expected = hf_logits(dequantized, ids)
    assert np.abs(expected - hf_logits(tiny_model, ids)).max() > 1e-3  # NOVAQ did change the model
    assert np.abs(gguf_logits(path, ids) - expected).max() < 1e-3
