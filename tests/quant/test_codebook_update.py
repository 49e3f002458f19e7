"""GPTVQ's codebook update: with the indices fixed, re-fitting codebooks and row means lowers the
layer output error under the Hessian metric, keeps every index, and never makes a layer worse."""

from __future__ import annotations

import torch

from bird_bone.quant.codebook_update import hessian_factor, output_error, update_codebooks
from bird_bone.quant.novaq import NovaqConfig, quantize_tensor


def _layer(seed: int = 0):
    torch.manual_seed(seed)
    x = torch.randn(3000, 8) @ torch.randn(8, 32) + 0.05 * torch.randn(3000, 32)  # correlated inputs
    return torch.randn(48, 32) + 0.3, 2 * x.T @ x / x.shape[0]


def test_update_lowers_the_output_error_with_indices_fixed():
    w, hessian = _layer()
    config = NovaqConfig(codebook_size=8, residual_codebook_size=2, subspaces=2, codebook_update_iterations=0)
    q = quantize_tensor(w, config, "w", hessian=hessian)
    codes1, codes2 = q.codes1.clone(), q.codes2.clone()
    before, after = update_codebooks(q, w, hessian, iterations=20)
    fresh = quantize_tensor(w, config, "w", hessian=hessian)
    assert abs(before - output_error(w, fresh, hessian_factor(hessian))) < 1e-6
    assert after < 0.97 * before
    assert torch.equal(q.codes1, codes1) and torch.equal(q.codes2, codes2)
    assert torch.equal(q.primary, q.primary.half().float())  # stored precision


def test_quantize_tensor_runs_the_update_when_configured():
    w, hessian = _layer(1)
    base = dict(codebook_size=8, residual_codebook_size=2, subspaces=2)
    factor = hessian_factor(hessian)
    plain = quantize_tensor(w, NovaqConfig(**base, codebook_update_iterations=0), "w", hessian=hessian)
    updated = quantize_tensor(w, NovaqConfig(**base, codebook_update_iterations=10), "w", hessian=hessian)
    assert output_error(w, updated, factor) < output_error(w, plain, factor)


def test_update_never_makes_a_layer_worse():
    w, hessian = _layer(2)
    config = NovaqConfig(codebook_size=8, residual_codebook_size=2, subspaces=2, codebook_update_iterations=0)
    q = quantize_tensor(w, config, "w", hessian=hessian)
    before, after = update_codebooks(q, w, hessian, iterations=1)
    assert after <= before
    assert output_error(w, q, hessian_factor(hessian)) <= before + 1e-6
