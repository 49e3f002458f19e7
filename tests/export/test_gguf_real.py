"""GGUF export of the embedded SmolLM2-135M (Q4_1 weights dequantized to float32) checked in llama.cpp:
F32 logits match transformers to 1e-3, the vocabulary equals the original GGUF's, and Q8_0's WikiText-2
perplexity is within 1 % of transformers' on the same token windows."""

from __future__ import annotations

import gguf
import numpy as np
import pytest
import torch

from bird_bone.data.windows import evaluation_windows
from bird_bone.eval.llamacpp import llama_logits, llama_perplexity, load_llama
from bird_bone.eval.perplexity import perplexity
from bird_bone.export.gguf import write_gguf
from bird_bone.models.loading import embedded_model_path

pytestmark = pytest.mark.slow
PROMPTS = [
    "The capital of France is",
    "def fibonacci(n):\n    if n < 2:\n        return n",
    "Bones grow where they are loaded and thin where they are not. In 1892, Julius Wolff",
]


@pytest.fixture(scope="module")
def f32_gguf(smollm2, tmp_path_factory):
    return write_gguf(smollm2.model, smollm2.tokenizer, tmp_path_factory.mktemp("gguf") / "smollm2-f32.gguf", "F32")


def test_f32_logits_match_transformers(smollm2, f32_gguf):
    llm = load_llama(f32_gguf.path, n_ctx=128)
    try:
        for prompt in PROMPTS:
            ids = smollm2.tokenizer(prompt, add_special_tokens=False)["input_ids"]
            with torch.no_grad():
                expected = smollm2.model(torch.tensor([ids])).logits[0].numpy()
            assert np.abs(llama_logits(llm, ids) - expected).max() < 1e-3, prompt
            assert llm.tokenize(prompt.encode(), add_bos=False, special=False) == ids
    finally:
        llm.close()


def test_vocabulary_equals_the_original_gguf(f32_gguf):
    ours, original = gguf.GGUFReader(f32_gguf.path).fields, gguf.GGUFReader(embedded_model_path("smollm2-135m")).fields
    for key in ("tokenizer.ggml.tokens", "tokenizer.ggml.merges", "tokenizer.ggml.token_type"):
        assert ours[key].contents() == original[key].contents(), key
    for key in ("bos_token_id", "eos_token_id", "padding_token_id", "add_bos_token"):
        assert ours[f"tokenizer.ggml.{key}"].contents() == original[f"tokenizer.ggml.{key}"].contents(), key
    assert ours["llama.rope.freq_base"].contents() == original["llama.rope.freq_base"].contents()


def test_q8_0_perplexity_within_one_percent(smollm2, wikitext_test_tokens, tmp_path):
    windows = evaluation_windows(wikitext_test_tokens, 512, 4, "wikitext2-raw-test")
    path = write_gguf(smollm2.model, smollm2.tokenizer, tmp_path / "smollm2-q8_0.gguf", "Q8_0").path
    reference = perplexity(smollm2.model, windows, batch_size=2, progress=False)
    exported = llama_perplexity(path, windows)
    assert exported.predicted_tokens == reference.predicted_tokens
    assert abs(exported.perplexity / reference.perplexity - 1) < 0.01
