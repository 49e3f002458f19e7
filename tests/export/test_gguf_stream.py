"""The streamed GGUF export writes the same file contents as the in-memory exporter."""

import numpy as np
import pytest
import torch

from bird_bone.errors import ArtifactError, BirdBoneError
from bird_bone.export.gguf import write_gguf
from bird_bone.export.gguf_stream import export_gguf_streamed, write_gguf_streamed
from tests.conftest import make_tiny_llama


def _tensors(path) -> dict[str, tuple[str, np.ndarray]]:
    import gguf

    reader = gguf.GGUFReader(path)
    return {t.name: (t.tensor_type.name, np.array(t.data)) for t in reader.tensors}


def _fields(path) -> dict:
    import gguf

    reader = gguf.GGUFReader(path)
    return {k: f.contents() for k, f in reader.fields.items() if not k.startswith("GGUF.")}


@pytest.fixture
def source(tmp_path, tiny_tokenizer):
    model = make_tiny_llama(len(tiny_tokenizer), layers=3).to(torch.bfloat16)
    path = tmp_path / "source"
    model.save_pretrained(path, max_shard_size="20KB")
    tiny_tokenizer.save_pretrained(path)
    return model, path


@pytest.mark.parametrize("type", ["F16", "F32", "Q4_0"])
def test_streamed_gguf_equals_the_in_memory_export(tmp_path, tiny_tokenizer, source, type):
    model, path = source
    in_memory = write_gguf(model.float(), tiny_tokenizer, tmp_path / "memory.gguf", type, name="tiny")
    streamed = write_gguf_streamed(path, tmp_path / "streamed.gguf", type, name="tiny")
    expected, got = _tensors(in_memory.path), _tensors(streamed.path)
    assert list(got) == list(expected)
    for name, (kind, data) in expected.items():
        assert got[name][0] == kind, name
        assert np.array_equal(got[name][1], data), name
    assert _fields(streamed.path) == _fields(in_memory.path)
    assert streamed.size_bytes == in_memory.size_bytes


def test_streamed_q4_k_m_through_llama_cpp(tmp_path, source):
    _, path = source
    result = export_gguf_streamed(path, tmp_path / "q4_k_m.gguf", "Q4_K_M", threads=1)
    f16 = write_gguf_streamed(path, tmp_path / "f16.gguf", "F16")
    assert result.type == "Q4_K_M" and result.parameters == f16.parameters
    assert result.size_bytes < 0.6 * f16.size_bytes


def test_a_missing_tensor_is_named(tmp_path, source):
    from safetensors.torch import load_file, save_file

    _, path = source
    shard = next(p for p in sorted(path.glob("*.safetensors")) if "model.norm.weight" in load_file(p))
    tensors = load_file(shard)
    del tensors["model.norm.weight"]
    save_file(tensors, shard, metadata={"format": "pt"})
    with pytest.raises(BirdBoneError, match="model.norm.weight"):
        write_gguf_streamed(path, tmp_path / "x.gguf")
    assert not (tmp_path / "x.gguf").exists()
    with pytest.raises(ArtifactError, match="Q4_K_M"):
        write_gguf_streamed(path, tmp_path / "x.gguf", "Q4_K_M")
