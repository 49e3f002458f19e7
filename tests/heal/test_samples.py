"""Heal text sampled from the teacher (LLM-QAT): shapes, first tokens, reproducibility."""

from __future__ import annotations

import pytest
import torch

from bird_bone.heal.samples import first_tokens, sample_sequences
from tests.conftest import make_tiny_llama


def test_samples_have_the_asked_shape_start_with_bos_and_repeat_for_a_seed():
    model = make_tiny_llama(64)
    before = torch.get_rng_state()
    a = sample_sequences(model, 5, 12, bos=1, seed=3, batch_size=2)
    assert torch.equal(torch.get_rng_state(), before)  # the global random state is left alone
    assert a.shape == (5, 12) and (a[:, 0] == 1).all()
    assert torch.equal(a, sample_sequences(model, 5, 12, bos=1, seed=3, batch_size=2))
    assert not torch.equal(a, sample_sequences(model, 5, 12, bos=1, seed=4, batch_size=2))
    assert len(set(a[:, 1:].flatten().tolist())) > 10  # sampled from the whole distribution, not greedy


def test_without_bos_the_first_token_is_drawn_outside_the_special_tokens():
    tokens = first_tokens(200, 8, None, [0, 1, 2], torch.Generator().manual_seed(0))
    assert set(tokens.flatten().tolist()) == {3, 4, 5, 6, 7}
    samples = sample_sequences(make_tiny_llama(64), 4, 6, exclude=range(60), seed=0)
    assert (samples[:, 0] >= 60).all()


def test_bad_sizes_name_the_parameters():
    with pytest.raises(ValueError, match="sample_length"):
        sample_sequences(make_tiny_llama(64), 2, 1)
