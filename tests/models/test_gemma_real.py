"""The embedded Gemma 3 270M (a mixed Q5_0/Q4_K/Q6_K/Q8_0 GGUF dequantized to float32, a base model):
its layout, its BOS convention, and its F32 GGUF export scoring in llama.cpp as in transformers."""

from __future__ import annotations

import gguf
import pytest

from bird_bone.data.windows import bos_token, evaluation_windows, tokenize_text
from bird_bone.eval.llamacpp import llama_perplexity
from bird_bone.eval.perplexity import perplexity
from bird_bone.export.gguf import write_gguf
from bird_bone.models.families import embedding_scale, family_of
from tests.conftest import shared_file

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def gemma():
    from bird_bone.models.loading import load_model

    return load_model("gemma3-270m")


def test_gemma_layout_and_bos(gemma):
    model, tokenizer, provenance = gemma
    c = model.config
    assert family_of(model).gguf_arch == "GEMMA3" and provenance.kind == "embedded"
    assert (c.num_hidden_layers, c.hidden_size, c.num_attention_heads, c.num_key_value_heads, c.head_dim) == (
        18, 640, 4, 1, 256,
    )  # fmt: skip
    assert set(c.layer_types) == {"sliding_attention", "full_attention"}
    assert embedding_scale(model) == pytest.approx(640**0.5)
    assert bos_token(tokenizer) == 2


def test_f32_export_keeps_the_source_metadata_and_scores_as_transformers(gemma, tmp_path):
    model, tokenizer, provenance = gemma
    text = shared_file("wikitext2-raw-test.txt").read_text()
    windows = evaluation_windows(tokenize_text(tokenizer, text), 128, 2, bos=bos_token(tokenizer))
    export = write_gguf(model, tokenizer, tmp_path / "gemma.gguf", "F32", metadata={"provenance": provenance.to_dict()})
    fields = gguf.GGUFReader(export.path).fields
    assert (
        str(fields["tokenizer.ggml.model"].contents()) == "llama"
        and len(fields["tokenizer.ggml.tokens"].data) == 262_144
    )
    ours = perplexity(model, windows, batch_size=1, progress=False).perplexity
    theirs = llama_perplexity(export.path, windows, threads=2).perplexity
    assert abs(theirs / ours - 1) < 0.01
