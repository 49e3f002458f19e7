"""Model inputs are checked before use (issue 17, item 5): a damaged GGUF header, damaged tensor
data, a changed embedded file or non-finite weights are refused with an error naming the file and
tensor, never turned into a model of garbage weights."""

from __future__ import annotations

import shutil
from pathlib import Path

import gguf
import numpy as np
import pytest
import torch

from bird_bone.errors import ModelLoadError
from bird_bone.export.gguf import write_gguf
from bird_bone.io.atomic import sha256_file
from bird_bone.io.checkpoint import Checkpoint, save_checkpoint
from bird_bone.models.gguf_check import check_finite, check_package_record
from bird_bone.models.loading import check_gguf, embedded_model_path, load_model


@pytest.fixture
def tiny_gguf(tmp_path, tiny_model, tiny_tokenizer) -> Path:
    return Path(write_gguf(tiny_model, tiny_tokenizer, tmp_path / "tiny.gguf", "F32").path)


def damage_field(path: Path, tensor: int, part: int, change) -> None:
    """Edit one field of a tensor's header entry in place (name, dims, type, offset)."""
    reader = gguf.GGUFReader(path, "r+")
    values = reader.tensors[tensor].field.parts[part]
    values[:] = change(values.copy())
    values.flush()
    del reader


def test_the_undamaged_file_passes(tiny_gguf):
    check_gguf(tiny_gguf)


@pytest.mark.parametrize(
    ("tensor", "part", "change"),
    [
        (0, 4, lambda v: np.full_like(v, int(gguf.GGMLQuantizationType.F16))),  # type F32 -> F16
        (-1, 4, lambda v: np.full_like(v, int(gguf.GGMLQuantizationType.F16))),  # the last tensor's type
        (1, 4, lambda v: np.full_like(v, int(gguf.GGMLQuantizationType.Q8_0))),  # a quantized type
        (2, 5, lambda v: v + 32),  # offset moved by one alignment step
        (3, 3, lambda v: v + np.array([0, 1] if len(v) == 2 else [1], dtype=v.dtype)),  # one more row
    ],
)
def test_a_damaged_tensor_table_is_refused_naming_the_tensor(tiny_gguf, tensor, part, change):
    name = gguf.GGUFReader(tiny_gguf).tensors[tensor].name
    damage_field(tiny_gguf, tensor, part, change)
    with pytest.raises(ModelLoadError, match=rf"tiny.gguf.*{name}"):
        check_gguf(tiny_gguf)


def test_a_cut_file_is_refused(tiny_gguf):
    tiny_gguf.write_bytes(tiny_gguf.read_bytes()[:-100])
    with pytest.raises(ModelLoadError, match="tiny.gguf"):
        check_gguf(tiny_gguf)


def test_tensor_data_overwritten_with_0xff_is_refused_at_load(tiny_gguf, tmp_path):
    tensor = next(t for t in gguf.GGUFReader(tiny_gguf).tensors if t.name == "blk.0.attn_q.weight")
    data = bytearray(tiny_gguf.read_bytes())
    data[int(tensor.data_offset) : int(tensor.data_offset) + 256] = b"\xff" * 256
    tiny_gguf.write_bytes(bytes(data))
    check_gguf(tiny_gguf)  # the table is intact: only the values can tell
    with pytest.raises(ModelLoadError, match=r"tiny.gguf: tensor 'model.layers.0.self_attn.q_proj.weight' holds 64 of"):
        load_model(str(tiny_gguf), cache_dir=tmp_path / "cache")
    assert not any((tmp_path / "cache").rglob("*.safetensors"))  # no converted copy of garbage is cached


def test_a_model_directory_with_nan_weights_is_refused(tmp_path, tiny_model, tiny_tokenizer):
    with torch.no_grad():
        tiny_model.model.layers[1].mlp.down_proj.weight[0, 0] = float("nan")
    save_checkpoint(Checkpoint(tiny_model, tiny_tokenizer), tmp_path / "model")
    with pytest.raises(ModelLoadError, match=r"model: tensor 'model.layers.1.mlp.down_proj.weight' holds 1 of 2048"):
        load_model(str(tmp_path / "model"))


def test_finite_check_passes_a_good_model_and_names_an_infinite_buffer(tiny_model):
    check_finite(tiny_model, "tiny")
    tiny_model.register_buffer("scale", torch.tensor([1.0, float("inf")]))
    with pytest.raises(ModelLoadError, match="tiny: tensor 'scale' holds 1 of 2"):
        check_finite(tiny_model, "tiny")


def test_the_embedded_model_is_compared_with_its_wheels_published_sha256(tmp_path):
    path = embedded_model_path("smollm2-135m")
    check_package_record(path, sha256_file(path))
    with pytest.raises(ModelLoadError, match=r"does not match the SHA-256 its package llm.smollm2 .*reinstall"):
        check_package_record(path, "0" * 64)
    copy = tmp_path / path.name
    shutil.copy(path, copy)
    check_package_record(copy, "0" * 64)  # a file no package lists has no published checksum to compare
