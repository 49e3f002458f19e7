"""NOVAQ composed on tiny random models: exact bit accounting, decode, refinement, RTN."""

from __future__ import annotations

import copy

import pytest
import torch

from bird_bone.quant.novaq import (
    NovaqConfig,
    apply_quantized,
    bit_accounting,
    default_filter,
    quantize_model,
    quantize_tensor,
    with_embeddings,
)
from bird_bone.quant.refine import RefineConfig, refine
from bird_bone.quant.rtn import rtn_bits_per_weight, rtn_quantize
from tests.conftest import make_tiny_llama


def test_index_bits_per_weight_default_is_1_5():
    assert NovaqConfig().index_bits_per_weight == 1.5
    assert NovaqConfig(codebook_size=64).index_bits_per_weight == 2.0


def test_bit_accounting_is_exact_for_one_matrix():
    w = torch.randn(64, 32)
    cfg = NovaqConfig(subspaces=4, codebook_size=16, residual_codebook_size=4, outlier_threshold=0.05, group_rows=16)
    q = quantize_tensor(w, cfg)
    bits = q.bits()
    assert bits["indices"] == 64 * 32 // 4 * (4 + 2)
    assert bits["codebooks"] == 4 * (16 + 4) * 4 * 16  # 4 groups of (K1 + K2) d-vectors in float16
    assert bits["means"] == 64 * 16
    assert bits["scales"] == 4 * 16 and bits["outlier_metadata"] == 4 * 32  # ceil(5 % of 64) = 4 rows
    assert q.decode().shape == (64, 32)


def test_quantize_model_accounts_every_weight(tiny_tokenizer):
    model = make_tiny_llama(len(tiny_tokenizer))
    before = {n: p.clone() for n, p in model.named_parameters()}
    quantized = quantize_model(model, NovaqConfig(), default_filter, progress=False)
    assert len(quantized) == 2 * 7 and all(".layers." in n for n in quantized)
    assert all(torch.equal(p, before[n]) for n, p in model.named_parameters())  # model untouched
    acc = bit_accounting(model, quantized)
    total = sum(p.numel() for p in model.parameters())
    assert acc["total_weights"] == total
    assert acc["total_bits"] == acc["quantized_bits"] + (total - acc["quantized_weights"]) * 16
    assert 1.5 < acc["quantized_bits_per_weight"] < 3.0  # tiny matrices: codebooks weigh a lot
    apply_quantized(model, quantized)
    name = next(iter(quantized))
    assert torch.equal(dict(model.named_parameters())[name], quantized[name].decode())


def test_embeddings_included_when_asked(tiny_tokenizer):
    model = make_tiny_llama(len(tiny_tokenizer))
    quantized = quantize_model(model, NovaqConfig(), with_embeddings, progress=False)
    assert "model.embed_tokens.weight" in quantized and "lm_head.weight" not in quantized  # tied: once


def test_indivisible_shape_names_the_tensor():
    with pytest.raises(ValueError, match="blk.weight: 30 columns"):
        quantize_tensor(torch.randn(8, 30), NovaqConfig(subspaces=4), "blk.weight")


def test_refinement_lowers_the_distillation_loss(tiny_tokenizer):
    torch.manual_seed(0)
    model = make_tiny_llama(len(tiny_tokenizer))
    quantized = quantize_model(model, NovaqConfig(codebook_size=4, residual_codebook_size=2), progress=False)
    bits_before = bit_accounting(model, quantized)["total_bits"]
    windows = torch.randint(0, len(tiny_tokenizer), (4, 16))
    result = refine(model, quantized, windows, RefineConfig(max_iterations=30, learning_rate=3e-3, batch_size=4))
    assert len(result.losses) == 30 and result.seconds > 0
    assert sum(result.losses[-5:]) / 5 < 0.8 * sum(result.losses[:5]) / 5
    assert bit_accounting(model, quantized)["total_bits"] == bits_before  # bit budget unchanged
    q = next(iter(quantized.values()))
    assert torch.equal(q.primary, q.primary.half().float())  # rounded back to storage precision


def test_rtn_error_and_bits():
    w = torch.randn(16, 576)
    err4 = (rtn_quantize(w, 4, 128) - w).pow(2).mean()
    err3 = (rtn_quantize(w, 3, 128) - w).pow(2).mean()
    assert err4 < err3 < w.pow(2).mean() * 0.1
    assert rtn_quantize(w, 4, 128).shape == w.shape
    assert rtn_bits_per_weight(4, 128) == 4.25


def test_deepcopy_of_quantized_tensors_is_independent():
    q = quantize_tensor(torch.randn(8, 8), NovaqConfig(codebook_size=4, residual_codebook_size=2))
    r = copy.deepcopy(q)
    r.primary.data += 1
    assert not torch.equal(q.decode(), r.decode())


def test_activation_aware_weighting_lowers_output_error():
    torch.manual_seed(0)
    w = torch.randn(64, 64)
    x = torch.randn(2000, 64) * torch.logspace(-1, 1, 64)[torch.randperm(64)]  # uneven input columns
    energy = x.pow(2).mean(0)
    cfg = NovaqConfig(codebook_size=16, residual_codebook_size=4, activation_aware=True)
    plain = quantize_tensor(w, cfg)
    aware = quantize_tensor(w, cfg, energy=energy)
    err_plain = float(((plain.decode() - w).detach().pow(2) * energy).sum())  # = output error, independent x
    err_aware = float(((aware.decode() - w).detach().pow(2) * energy).sum())
    assert err_aware < 0.9 * err_plain
    assert aware.bits()["column_scales"] == 64 * 16 and plain.bits()["column_scales"] == 0


def test_input_second_moments_match_a_direct_computation(tiny_tokenizer):
    from bird_bone.quant.activations import input_second_moments

    model = make_tiny_llama(len(tiny_tokenizer), layers=1)
    windows = torch.randint(0, len(tiny_tokenizer), (3, 8))
    name = "model.layers.0.mlp.down_proj.weight"
    captured = []
    handle = model.model.layers[0].mlp.down_proj.register_forward_hook(lambda m, i, o: captured.append(i[0]))
    moments = input_second_moments(model, windows, [name], batch_size=2, progress=False)
    handle.remove()
    direct = torch.cat([c.reshape(-1, 64) for c in captured]).pow(2).mean(0)
    assert torch.allclose(moments[name], direct, rtol=1e-5)


def test_a_second_refinement_still_tunes_the_codebooks_and_freezes_nothing(tiny_tokenizer):
    torch.manual_seed(0)
    model = make_tiny_llama(len(tiny_tokenizer))
    quantized = quantize_model(model, NovaqConfig(codebook_size=4, residual_codebook_size=2), progress=False)
    windows = torch.randint(0, len(tiny_tokenizer), (4, 16))
    refine(model, quantized, windows, RefineConfig(max_iterations=2, learning_rate=3e-3), progress=False)
    q = next(iter(quantized.values()))
    primary = q.primary.detach().clone()
    refine(model, quantized, windows, RefineConfig(max_iterations=3, learning_rate=3e-3), progress=False)
    assert not torch.equal(q.primary, primary)  # the second call trained the codebooks too
    assert all(p.requires_grad and p.grad is None for p in model.parameters())  # model untouched
