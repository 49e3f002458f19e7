"""Tiny random models of every supported family, built from each family's transformers config (no
download): 32 wide, 4 query heads, an MLP of 64, random norms and biases so that a norm offset or a
dropped bias shows in the logits."""

from __future__ import annotations

import torch

FAMILY_NAMES = ("llama", "mistral", "qwen2", "qwen3", "gemma3_text", "phi3")


def _config(family: str, vocab_size: int):
    import transformers as t

    common = dict(
        vocab_size=vocab_size,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=2,
        tie_word_embeddings=True,
    )
    if family == "llama":
        return t.LlamaConfig(**common)
    if family == "mistral":
        return t.MistralConfig(**common, sliding_window=None, head_dim=8)
    if family == "qwen2":
        return t.Qwen2Config(**common)
    if family == "qwen3":
        return t.Qwen3Config(**common, head_dim=8)
    if family == "gemma3_text":  # head_dim 16 != 32 / 4; layer 5 is global, the others slide over 16 tokens
        common.update(num_hidden_layers=6, num_key_value_heads=1)
        return t.Gemma3TextConfig(**common, head_dim=16, query_pre_attn_scalar=16, sliding_window=16)
    if family == "phi3":
        common.update(tie_word_embeddings=False)
        return t.Phi3Config(**common, original_max_position_embeddings=256)
    raise ValueError(family)


def make_tiny_family(family: str, vocab_size: int, seed: int = 0):
    """A tiny random ``family`` model in eval mode."""
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(_config(family, vocab_size), dtype=torch.float32).eval()
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "norm" in name:
                param.add_(0.1 * torch.randn_like(param))
            elif name.endswith("bias"):
                param.copy_(0.05 * torch.randn_like(param))
    return model
