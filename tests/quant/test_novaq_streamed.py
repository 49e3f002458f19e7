"""Streamed NOVAQ stages 1-2 give the in-memory codes exactly, write a loadable decoded checkpoint,
and resume."""

import copy
import json

import pytest
import torch
from transformers import AutoModelForCausalLM

from bird_bone.export.novaq_codec import encode_tensor
from bird_bone.io.tensors import load_tensors
from bird_bone.quant.activations import input_second_moments
from bird_bone.quant.config import NovaqConfig
from bird_bone.quant.novaq import (
    apply_quantized,
    bit_accounting,
    default_filter,
    quantize_model,
    quantize_model_hessian,
    with_embeddings,
)
from bird_bone.quant.streamed import stream_novaq
from tests.tiny_sources import random_windows, saved_tiny_llama

SMALL = {"codebook_size": 8, "residual_codebook_size": 2, "kmeans_iterations": 3, "codebook_update_iterations": 1}


def _source(tmp_path, layers=2):
    return saved_tiny_llama(tmp_path, layers, seed=5)


def _windows():
    return random_windows(4, 3)


def _in_memory(model, config, windows, batch_size):
    filter_fn = with_embeddings if config.include_embeddings else default_filter
    if config.hessian_aware:
        return quantize_model_hessian(model, config, windows, filter_fn, progress=False, batch_size=batch_size)
    energies = None
    if config.activation_aware:
        names = [n for n, p in model.named_parameters() if filter_fn(n, p)]
        energies = input_second_moments(model, windows, names, progress=False)
    return quantize_model(model, config, filter_fn, progress=False, energies=energies)


def _codes(out):
    codes = {}
    for path in sorted((out / "novaq").glob("*.safetensors")):
        codes.update(load_tensors(path))
    return codes


@pytest.mark.parametrize(
    "mode",
    [{"hessian_aware": True}, {"hessian_aware": False}, {"hessian_aware": False, "activation_aware": True},
     {"hessian_aware": True, "include_embeddings": True}],
)  # fmt: skip
def test_streamed_codes_equal_the_in_memory_codes(tmp_path, mode):
    model, source = _source(tmp_path)
    config = NovaqConfig.model_validate({**SMALL, **mode})
    batch_size = 1 if config.activation_aware else 2  # input_second_moments runs one window at a time
    expected = _in_memory(model, config, _windows(), batch_size)
    accounting = stream_novaq(source, tmp_path / "out", config, _windows(), batch_size)
    codes = _codes(tmp_path / "out")
    wanted = {}
    for name, q in expected.items():
        wanted.update(encode_tensor(name, q)[1])
    assert set(codes) == set(wanted)
    for key, tensor in wanted.items():
        assert torch.equal(codes[key], tensor), key
    assert accounting == bit_accounting(model, expected)
    summary = json.loads((tmp_path / "out" / "novaq" / "novaq.json").read_text())
    assert set(summary["tensors"]) == set(expected)
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path / "out", dtype=torch.float32)
    decoded = apply_quantized(copy.deepcopy(model), expected).state_dict()
    for name, tensor in loaded.state_dict().items():
        assert torch.equal(tensor, decoded[name]), name


def test_an_interrupted_run_resumes_to_the_same_codes(tmp_path):
    _, source = _source(tmp_path, layers=3)
    config = NovaqConfig.model_validate(SMALL)

    def stop(index):
        if index == 0:
            raise KeyboardInterrupt

    stream_novaq(source, tmp_path / "whole", config, _windows(), 2)
    with pytest.raises(KeyboardInterrupt):
        stream_novaq(source, tmp_path / "cut", config, _windows(), 2, on_layer=stop)
    stream_novaq(source, tmp_path / "cut", config, _windows(), 2)
    whole, cut = _codes(tmp_path / "whole"), _codes(tmp_path / "cut")
    assert set(cut) == set(whole) and all(torch.equal(cut[k], whole[k]) for k in whole)


def test_calibrated_modes_need_windows(tmp_path):
    _, source = _source(tmp_path)
    with pytest.raises(ValueError, match="novaq.hessian_aware needs calibration windows"):
        stream_novaq(source, tmp_path / "out", NovaqConfig.model_validate(SMALL))
