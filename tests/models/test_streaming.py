"""The streamed reader: a layer loaded from disk equals the loaded model's, frees back to meta, and
bad input fails naming the file or tensor."""

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from bird_bone.errors import ModelLoadError
from bird_bone.models.streaming import StreamedCheckpoint
from tests.conftest import make_tiny_llama


@pytest.fixture
def source(tmp_path):
    model = make_tiny_llama(300, layers=2).to(torch.bfloat16)
    path = tmp_path / "source"
    model.save_pretrained(path, max_shard_size="20KB")
    return model, path


def test_a_layer_loads_in_float32_and_frees_to_meta(source):
    model, path = source
    reader = StreamedCheckpoint(path)
    assert all(p.device.type == "meta" for p in reader.model.parameters())
    layer = reader.load_layer(1)
    for name, tensor in layer.state_dict().items():
        assert tensor.dtype == torch.float32
        assert torch.equal(tensor, model.model.layers[1].state_dict()[name].float()), name
    written = reader.tensors_of(layer, "model.layers.1")
    assert all(t.dtype == torch.bfloat16 for t in written.values())
    reader.free(layer)
    assert all(p.device.type == "meta" for p in layer.parameters())
    assert "model.embed_tokens.weight" in reader.other_names()
    assert not any(name.startswith("model.layers.") for name in reader.other_names())


def test_a_tensor_of_the_wrong_shape_is_named(source):
    _, path = source
    index = json.loads((path / "model.safetensors.index.json").read_text())
    name = "model.layers.0.mlp.up_proj.weight"
    shard = path / index["weight_map"][name]
    tensors = load_file(shard)
    tensors[name] = tensors[name][:10]
    save_file(tensors, shard, metadata={"format": "pt"})
    with pytest.raises(ModelLoadError, match=rf"{name} has shape \[10, 32\]"):
        StreamedCheckpoint(path).load_layer(0)


def test_a_directory_without_safetensors_is_named(tmp_path, source):
    _, path = source
    for shard in path.glob("*.safetensors*"):
        shard.unlink()
    with pytest.raises(ModelLoadError, match="no model.safetensors.index.json and no model.safetensors"):
        StreamedCheckpoint(path)
    with pytest.raises(ModelLoadError, match="not a model directory"):
        StreamedCheckpoint(tmp_path / "absent")
