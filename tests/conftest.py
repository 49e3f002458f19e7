"""Shared fixtures: tiny random LLaMA models with an in-memory tokenizer (fast tests), and the
embedded SmolLM2 with ../shared/data text (slow tests, skipped with a reason when absent)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"

torch.set_num_threads(2)

TINY_TEXT = (
    "The cat sat on the mat. The dog sat on the log. A bird sang in the tree and the sun was warm. "
    "Bones grow where they are loaded and thin where they are not. The river ran to the sea. "
) * 20


def shared_file(name: str) -> Path:
    path = SHARED_DATA / name
    if not path.is_file():
        pytest.skip(f"{path} is absent: the shared evaluation text lives in ../shared/data beside the repo")
    return path


@pytest.fixture(scope="session")
def tiny_tokenizer():
    return make_tiny_tokenizer()


def make_tiny_tokenizer():
    """A 300-token byte-level BPE trained on TINY_TEXT, in memory (no download)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer(models.BPE(unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=300, special_tokens=["<unk>", "<s>", "</s>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    backend.train_from_iterator([TINY_TEXT], trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=backend, unk_token="<unk>", bos_token="<s>", eos_token="</s>", pad_token="</s>"
    )


def make_tiny_llama(vocab_size: int, seed: int = 0, layers: int = 2):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        tie_word_embeddings=True,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=2,
    )
    return LlamaForCausalLM(config).eval()


@pytest.fixture
def tiny_model(tiny_tokenizer):
    return make_tiny_llama(len(tiny_tokenizer))


@pytest.fixture(scope="session")
def smollm2():
    """The embedded model, loaded once per test session (first load converts the GGUF, ~40 s)."""
    from bird_bone.models.loading import load_model

    return load_model("smollm2-135m")


@pytest.fixture(scope="session")
def wikitext_test_tokens(smollm2):
    from bird_bone.data.windows import tokenize_text

    return tokenize_text(smollm2.tokenizer, shared_file("wikitext2-raw-test.txt").read_text(encoding="utf-8"))
