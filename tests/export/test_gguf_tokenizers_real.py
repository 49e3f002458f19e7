"""The embedded models' real tokenizers in llama.cpp: the GGUF exporter's tokenizer metadata
(``bird_bone.export.gguf_vocab``, the path of a Hugging Face source) and the source GGUF's (which an
export from it carries over unchanged) tokenize real text to the same ids as transformers, BOS included.

The exports are of a tiny random model of the same family with the real vocabulary: only the
tokenizer is under test, and Gemma's 262,144-token vocabulary then costs 8 M parameters, not 268 M.
The models are SmolLM2-135M-Instruct (Q4_1 GGUF dequantized) and Gemma 3 270M (a base model, mixed
Q5_0/Q4_K/Q6_K/Q8_0 GGUF dequantized); their weights play no part here."""

from __future__ import annotations

import pytest

from bird_bone.export.gguf import write_gguf
from bird_bone.models.loading import embedded_model_path, load_model
from tests.conftest import shared_file
from tests.models.tiny_families import make_tiny_family

pytestmark = pytest.mark.slow
EDGE_CASES = [
    "Hello world",
    "  two leading spaces,\ttabs\tand\n\nnew lines\n",
    "Numbers: 3.14159, 1,234,567 and 2026-12-01.",
    "Unicode: café, naïve, Ærøskøbing, 東京, Привет, 🦴🐦 emoji.",
    "def f(x):\n    return x ** 2  # code\n",
    "<b>tags</b> and    runs   of     spaces",
]


def _texts() -> list[str]:
    wiki = shared_file("wikitext2-raw-test.txt").read_text(encoding="utf-8")[:20_000]
    stories = shared_file("tinystories-valid.txt").read_text(encoding="utf-8")[:20_000]
    return [wiki, stories, *EDGE_CASES]


def _mismatches(tokenizer, llm, texts: list[str]) -> list[str]:
    """The texts (first 40 characters) whose ids differ, without and with special tokens."""
    wrong = []
    for text in texts:
        for special in (False, True):
            ours = tokenizer(text, add_special_tokens=special)["input_ids"]
            theirs = llm.tokenize(text.encode("utf-8"), add_bos=special, special=False)
            if ours != theirs:
                wrong.append(f"{text[:40]!r} (special tokens: {special}): {len(ours)} vs {len(theirs)} ids")
    return wrong


@pytest.fixture(scope="module", params=["smollm2-135m", "gemma3-270m"])
def embedded(request):
    loaded = load_model(request.param)
    return request.param, loaded.model.config, loaded.tokenizer


def _vocab_only(path):
    import llama_cpp

    return llama_cpp.Llama(model_path=str(path), vocab_only=True, verbose=False)


def test_exported_tokenizer_tokenizes_as_transformers(embedded, tmp_path):
    name, config, tokenizer = embedded
    tiny = make_tiny_family(config.model_type, config.vocab_size)
    export = write_gguf(tiny, tokenizer, tmp_path / f"{name}-tokenizer.gguf", "F32")  # no template: written here
    llm = _vocab_only(export.path)
    try:
        assert llm.n_vocab() == config.vocab_size
        assert _mismatches(tokenizer, llm, _texts()) == []
    finally:
        llm.close()


def test_source_gguf_tokenizer_tokenizes_as_transformers(embedded):
    name, _, tokenizer = embedded
    llm = _vocab_only(embedded_model_path(name))
    try:
        assert _mismatches(tokenizer, llm, _texts()) == []
    finally:
        llm.close()
