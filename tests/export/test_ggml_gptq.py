"""GPTQ rounding into llama.cpp's block grids: lower layer output error than llama.cpp's own
rounding on correlated inputs, llama.cpp's very bytes when the inputs are uncorrelated (nothing to
feed forward), and the planner writes those bytes into the file llama.cpp then reads."""

from __future__ import annotations

import gguf
import numpy as np
import pytest
import torch

from bird_bone.errors import ArtifactError
from bird_bone.eval.llamacpp import llama_perplexity
from bird_bone.export import ggml_quant
from bird_bone.export.ggml_gptq import gptq_quantize, input_grams, output_error
from bird_bone.export.gguf_mix_write import overwrite_tensors
from bird_bone.export.gguf_mixed import prepare
from tests.export.test_gguf_mix import wide_llama


def correlated(width: int, rows: int = 64, tokens: int = 2048, seed: int = 0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((tokens, width)) @ (np.eye(width) + 0.3 * rng.standard_normal((width, width)))
    x[:, :4] *= 10  # a few outlier channels, as real activations have
    weight = (0.02 * rng.standard_normal((rows, width))).astype(np.float32)
    return weight, x.T @ x


@pytest.mark.parametrize("type", ["Q4_0", "Q4_1", "IQ4_NL", "Q4_K", "Q3_K", "Q2_K"])
def test_gptq_beats_llama_cpp_rounding_on_correlated_inputs(type):
    weight, gram = correlated(512)
    importance = np.diag(gram).astype(np.float32)
    ours = ggml_quant.dequantize(gptq_quantize(weight, gram, type, importance), type)
    theirs = ggml_quant.round_trip(weight, type, importance)
    assert output_error(weight, ours, gram) < 0.8 * output_error(weight, theirs, gram)


@pytest.mark.parametrize("type", ["Q8_0", "IQ4_NL", "Q4_K", "Q6_K"])
def test_uncorrelated_inputs_give_llama_cpp_bytes(type):
    weight, _ = correlated(512)
    importance = np.random.default_rng(1).random(512).astype(np.float32) + 0.1
    gram = np.diag(importance.astype(np.float64))  # nothing to feed forward: U is diagonal
    assert np.array_equal(gptq_quantize(weight, gram, type, importance), ggml_quant.quantize(weight, type, importance))


def test_gram_of_the_wrong_shape_is_refused():
    weight, gram = correlated(256)
    with pytest.raises(ArtifactError, match="Gram of shape"):
        gptq_quantize(weight, gram[:128, :128], "Q4_0")


def test_input_grams_are_the_inputs_gram(tiny_tokenizer):
    model = wide_llama(len(tiny_tokenizer))
    windows = torch.randint(3, len(tiny_tokenizer), (2, 16), generator=torch.Generator().manual_seed(0))
    grams = input_grams(model, windows)
    seen = []
    down = model.model.layers[0].mlp.down_proj
    hook = down.register_forward_pre_hook(lambda m, a: seen.append(a[0].reshape(-1, 512)))
    with torch.no_grad():
        for w in windows:
            model(input_ids=w.reshape(1, -1))
    hook.remove()
    x = torch.cat(seen)
    assert np.allclose(grams["model.layers.0.mlp.down_proj.weight"], (x.T @ x).numpy(), rtol=1e-4, atol=1e-4)
    assert grams["model.layers.1.self_attn.q_proj.weight"] is grams["model.layers.1.self_attn.v_proj.weight"]
    assert "lm_head.weight" not in grams  # tied: the embedding keeps llama.cpp's rounding


def test_planner_writes_the_gptq_bytes_and_llama_cpp_reads_them(tmp_path, tiny_tokenizer):
    model = wide_llama(len(tiny_tokenizer))
    windows = torch.randint(3, len(tiny_tokenizer), (3, 48), generator=torch.Generator().manual_seed(0))
    planner = prepare(model, tiny_tokenizer, windows[:2], tmp_path / "work", rounding="gptq")
    plan = planner.plan(sum(planner.bounds()) // 2)
    rounded = planner.rounded(plan)
    assert rounded and "token_embd.weight" not in rounded
    path = planner.write(plan, tmp_path / "gptq.gguf")
    written = {t.name: np.asarray(t.data).view(np.uint8) for t in gguf.GGUFReader(path).tensors}
    for name, data in rounded.items():
        assert np.array_equal(written[name].reshape(data.shape), data), name
    plain = prepare(model, tiny_tokenizer, windows[:2], tmp_path / "plain", rounding="imatrix")
    assert plain.rounded(plain.plan(sum(plain.bounds()) // 2)) == {}
    assert np.isfinite(llama_perplexity(path, windows[2:], 1).perplexity)


def test_overwrite_names_the_tensor_whose_type_differs(tmp_path, tiny_tokenizer):
    model = wide_llama(len(tiny_tokenizer))
    windows = torch.randint(3, len(tiny_tokenizer), (1, 16), generator=torch.Generator().manual_seed(0))
    planner = prepare(model, tiny_tokenizer, windows, tmp_path / "work", rounding="imatrix")
    path = planner.write(planner.plan(planner.bounds()[1]), tmp_path / "q8.gguf")  # every matrix Q8_0
    name = "blk.0.ffn_down.weight"
    with pytest.raises(ArtifactError, match=name):
        overwrite_tensors(path, {name: ("Q4_0", np.zeros((256, 288), dtype=np.uint8))})
