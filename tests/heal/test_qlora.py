"""QLoRA micro-heal: pruned weights stay exactly zero, the loss goes down, NF4 keeps zeros."""

from __future__ import annotations

import copy

import bitsandbytes as bnb
import pytest
import torch

from bird_bone.heal.qlora import distillation_loss, merge_lora_masked, micro_heal, quantize_linears_nf4
from bird_bone.models.adapters import prunable_linears
from bird_bone.prune.layerwise import prune_layers
from tests.conftest import make_tiny_llama
from tests.models.tiny_families import FAMILY_NAMES, make_tiny_family


def windows(vocab: int, n: int = 8, length: int = 32, seed: int = 0) -> torch.Tensor:
    # a repetitive sequence a tiny model can learn within a few steps
    g = torch.Generator().manual_seed(seed)
    base = torch.randint(3, vocab, (8,), generator=g)
    return base.repeat(n, length // 8)


@pytest.mark.parametrize("base", ["nf4", "full"])
def test_heal_lowers_loss_and_keeps_every_pruned_weight_zero(base):
    model = make_tiny_llama(64)
    data = windows(64)
    masks = prune_layers(model, "magnitude", 0.5)
    before = {n: model.get_submodule(n).weight.detach().clone() for n in masks}
    result = micro_heal(model, data, masks, 25, learning_rate=1e-2, base=base, window_length=16, progress=False)
    assert len(result.loss) == 25 and result.merged_modules == 14
    assert sum(result.loss[-5:]) / 5 < 0.9 * sum(result.loss[:5]) / 5
    for name, mask in masks.items():
        weight = model.get_submodule(name).weight
        assert int((weight[mask] != 0).sum()) == 0, name  # exactly zero, not merely small
        assert not torch.equal(weight[~mask], before[name][~mask]), name  # the kept weights did change


def test_heal_with_zero_steps_changes_nothing():
    model = make_tiny_llama(64)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    result = micro_heal(model, windows(64), {}, 0, progress=False)
    assert result.loss == [] and all(torch.equal(state[k], v) for k, v in model.state_dict().items())


def test_heal_rejects_targets_that_match_nothing():
    with pytest.raises(ValueError, match="match no linear"):
        micro_heal(make_tiny_llama(64), windows(64), {}, 1, target_modules=["nope_proj"], progress=False)


def nf4_llama(intermediate: int):
    """A tiny random Llama with 64-wide rows everywhere but ``down_proj`` (``intermediate`` wide)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=64, hidden_size=64, intermediate_size=intermediate, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True)  # fmt: skip
    return LlamaForCausalLM(config).eval()


def effective_weight(layer) -> torch.Tensor:
    """The weight a linear of the NF4 copy multiplies by: dequantized for an NF4 layer."""
    if isinstance(layer, bnb.nn.Linear4bit):
        return bnb.functional.dequantize_4bit(layer.weight.data, layer.weight.quant_state)
    return layer.weight


def test_nf4_copy_keeps_pruned_zeros_exact():
    model = nf4_llama(128)
    masks = prune_layers(model, "magnitude", 0.5)
    assert quantize_linears_nf4(model, list(prunable_linears(model))) == []
    for name, mask in masks.items():
        layer = model.get_submodule(name)
        assert isinstance(layer, bnb.nn.Linear4bit)
        assert int((effective_weight(layer)[mask] != 0).sum()) == 0


def test_nf4_copy_keeps_every_row_at_its_own_scale():
    # a structured wave leaves MLP widths that are no multiple of the 64-element NF4 block (96 here,
    # Gemma 3's 1824); bitsandbytes' CPU dequantization would read such rows with other rows' scales
    model = nf4_llama(96)
    with torch.no_grad():
        for layer in model.model.layers:  # rows of very different sizes, as real neurons have
            layer.mlp.down_proj.weight.mul_(torch.logspace(-2, 2, 64).unsqueeze(1))
    float_weights = {n: model.get_submodule(n).weight.detach().clone() for n in prunable_linears(model)}
    kept = quantize_linears_nf4(model, list(float_weights))
    assert kept == [f"model.layers.{i}.mlp.down_proj" for i in range(2)]
    for name, weight in float_weights.items():
        error = (effective_weight(model.get_submodule(name)) - weight).norm(dim=1) / weight.norm(dim=1)
        assert float(error.max()) < 0.2, name  # NF4's own rounding, about 0.1 on random rows


def test_masked_merge_adds_the_delta_only_where_kept():
    from peft import LoraConfig, get_peft_model

    model = make_tiny_llama(64)
    peft_model = get_peft_model(
        make_tiny_llama(64), LoraConfig(r=2, target_modules=["q_proj"], init_lora_weights=False)
    )
    name = "model.layers.0.self_attn.q_proj"
    mask = torch.zeros_like(model.get_submodule(name).weight, dtype=torch.bool)
    mask[:, ::2] = True
    before = model.get_submodule(name).weight.detach().clone()
    assert merge_lora_masked(model, peft_model, {name: mask}) == 2  # q_proj of both layers
    delta = model.get_submodule(name).weight - before
    assert torch.equal(delta[mask], torch.zeros_like(delta[mask]))
    assert (delta[~mask] != 0).all()


def test_distillation_loss_is_zero_for_equal_logits_and_positive_otherwise():
    logits = torch.randn(2, 5, 11)
    assert distillation_loss(logits, logits, 2.0).item() == pytest.approx(0.0, abs=1e-6)
    assert distillation_loss(logits, torch.randn(2, 5, 11), 2.0).item() > 0.01


def test_heal_pieces_start_with_bos_only_when_the_tokenizer_adds_one():
    from bird_bone.heal.qlora import _batches

    windows = torch.arange(2 * 8).reshape(2, 8) + 10
    plain = next(_batches(windows, 4, 4, seed=0))
    assert sorted(plain[:, 0].tolist()) == [10, 14, 18, 22]  # pieces cut as they are
    led = next(_batches(windows, 4, 4, seed=0, bos=1))
    assert led[:, 0].tolist() == [1, 1, 1, 1] and torch.equal(led[:, 1:], plain[:, 1:])


@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_distilling_a_model_from_itself_starts_at_zero(family):
    # the student's logits line up with the teacher's (shift, BOS, Gemma's sliding window and
    # embedding scale): before any update the KL to itself is zero and the CE is the model's own
    model = make_tiny_family(family, 64)
    data = torch.randint(3, 64, (4, 32), generator=torch.Generator().manual_seed(0))
    result = micro_heal(copy.deepcopy(model), data, {}, 1, base="full", teacher=model, kd_weight=1.0, lm_weight=0.0,
                        batch_size=4, window_length=32, bos=1, learning_rate=1e-9, progress=False)  # fmt: skip
    assert result.kd[0] == pytest.approx(0.0, abs=1e-6)
    bos_led = torch.cat([torch.ones(4, 1, dtype=torch.long), data[:, 1:]], dim=1)
    with torch.no_grad():
        logits = model(bos_led).logits[:, :-1]
    own = torch.nn.functional.cross_entropy(logits.flatten(0, 1), bos_led[:, 1:].flatten())
    assert result.ce[0] == pytest.approx(float(own), rel=1e-5)
