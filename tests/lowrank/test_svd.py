"""Truncated SVD: energy-chosen rank, activation-aware scaling, and checkpoints that round-trip."""

from __future__ import annotations

import torch

from bird_bone.io.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from bird_bone.lowrank.svd import LowRankLinear, factorize, factorize_linears, rank_for_energy
from tests.conftest import make_tiny_llama


def test_rank_for_energy():
    s = torch.tensor([3.0, 2.0, 1.0, 0.0])  # energies 9, 4, 1 of 14
    assert rank_for_energy(s, 0.6) == 1 and rank_for_energy(s, 0.9) == 2 and rank_for_energy(s, 1.0) == 3


def test_factorize_is_exact_for_a_low_rank_matrix():
    torch.manual_seed(0)
    w = torch.randn(40, 3) @ torch.randn(3, 30)
    a, b, kept = factorize(w, 0.999999)
    assert a.shape == (3, 30) and b.shape == (40, 3) and kept > 0.999999
    assert torch.allclose(b @ a, w, atol=1e-4)


def test_activation_aware_scaling_lowers_the_output_error_at_equal_rank():
    torch.manual_seed(0)
    w = torch.randn(64, 48)
    x = torch.randn(2000, 48) * torch.logspace(-2, 1, 48)  # a few input columns dominate
    scale = x.pow(2).sum(0).sqrt()
    plain_a, plain_b, _ = factorize(w, 0.5)
    aware_a, aware_b, _ = factorize(w, 0.5, scale)
    r = min(plain_a.shape[0], aware_a.shape[0])
    plain = torch.linalg.norm(x @ (w - plain_b[:, :r] @ plain_a[:r]).T)
    aware = torch.linalg.norm(x @ (w - aware_b[:, :r] @ aware_a[:r]).T)
    assert aware < 0.7 * plain


def test_factorize_linears_skips_ranks_that_save_nothing_and_checkpoint_round_trips(tmp_path):
    model = make_tiny_llama(64)
    layer = model.model.layers[0].mlp
    with torch.no_grad():
        layer.up_proj.weight.copy_(torch.randn(64, 2) @ torch.randn(2, 32))  # rank 2
    report = factorize_linears(model, ["model.layers.0.mlp.up_proj", "model.layers.0.mlp.gate_proj"], 0.99)
    assert report["model.layers.0.mlp.up_proj"]["replaced"] and report["model.layers.0.mlp.up_proj"]["rank"] == 2
    assert not report["model.layers.0.mlp.gate_proj"]["replaced"]  # random: no rank saves memory
    assert isinstance(layer.up_proj, LowRankLinear)
    ids = torch.randint(3, 64, (1, 12))
    expected = model(input_ids=ids).logits
    save_checkpoint(Checkpoint(model, None), tmp_path / "ckpt")
    loaded = load_checkpoint(tmp_path / "ckpt").model
    assert isinstance(loaded.model.layers[0].mlp.up_proj, LowRankLinear)
    assert torch.allclose(loaded(input_ids=ids).logits, expected, atol=1e-5)
