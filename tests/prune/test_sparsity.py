"""The GGUF sparsity warning: a sparse model sent to GGUF is named, a dense or structured one is not."""

from __future__ import annotations

import logging

from bird_bone.prune.layerwise import prune_layers
from bird_bone.prune.sparsity import gguf_sparsity_warning
from tests.conftest import make_tiny_llama


def test_an_unstructured_or_nm_sparse_model_is_warned_about(caplog):
    model = make_tiny_llama(64)
    prune_layers(model, "magnitude", 0.5)
    with caplog.at_level(logging.WARNING):
        message = gguf_sparsity_warning(model)
    assert message is not None and "50.0% zeros (unstructured sparsity)" in message
    assert "prune.method: structured" in caplog.text
    nm = make_tiny_llama(64)
    prune_layers(nm, "magnitude", 0.5, n=2, m=4)
    assert "(2:4 sparsity)" in gguf_sparsity_warning(nm)


def test_a_dense_model_is_not_warned_about():
    model = make_tiny_llama(64)
    assert gguf_sparsity_warning(model) is None
    prune_layers(model, "magnitude", 0.04)  # under the 5 % a dense 4-bit model already holds
    assert gguf_sparsity_warning(model) is None
