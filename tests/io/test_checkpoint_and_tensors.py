import pytest
import torch

from bird_bone.errors import ArtifactError
from bird_bone.io.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from bird_bone.io.tensors import load_tensors, save_tensors


def test_checkpoint_round_trip_keeps_weights_tokenizer_and_metadata(tmp_path, tiny_model, tiny_tokenizer):
    path = save_checkpoint(Checkpoint(tiny_model, tiny_tokenizer, {"stage": "seeding", "wave": 0}), tmp_path / "ckpt")
    loaded = load_checkpoint(path)
    assert loaded.metadata == {"stage": "seeding", "wave": 0}
    for (name, a), (_, b) in zip(tiny_model.state_dict().items(), loaded.model.state_dict().items(), strict=True):
        assert torch.equal(a, b), name
    assert loaded.tokenizer("The cat sat").input_ids == tiny_tokenizer("The cat sat").input_ids


def test_incomplete_checkpoint_is_rejected_naming_the_file(tmp_path, tiny_model, tiny_tokenizer):
    path = save_checkpoint(Checkpoint(tiny_model, tiny_tokenizer), tmp_path / "ckpt")
    (path / "config.json").unlink()
    with pytest.raises(ArtifactError, match="config.json is missing"):
        load_checkpoint(path)
    with pytest.raises(ArtifactError, match="not found"):
        load_checkpoint(tmp_path / "nowhere")


def test_tensor_collection_round_trip_with_boolean_masks(tmp_path):
    tensors = {"layer.0.mask": torch.rand(4, 8) > 0.5, "layer.0.norms": torch.randn(8, dtype=torch.bfloat16)}
    save_tensors(tensors, tmp_path / "masks.safetensors")
    back = load_tensors(tmp_path / "masks.safetensors")
    assert back["layer.0.mask"].dtype == torch.bool
    assert all(torch.equal(tensors[k], back[k]) for k in tensors)


def test_truncated_tensor_file_is_rejected(tmp_path):
    path = tmp_path / "stats.safetensors"
    save_tensors({"x": torch.randn(64, 64)}, path)
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(ArtifactError, match="stats.safetensors"):
        load_tensors(path)


def test_masks_and_links_round_trip(tmp_path, tiny_model, tiny_tokenizer):
    from bird_bone.io.checkpoint import LINK_FILE

    name = "model.layers.0.mlp.up_proj"
    mask = torch.rand_like(tiny_model.get_submodule(name).weight) < 0.5
    ckpt = Checkpoint(tiny_model, tiny_tokenizer, {"stage": "x"}, {name: mask})
    save_checkpoint(ckpt, tmp_path / "a")
    assert ckpt.source == tmp_path / "a"
    save_checkpoint(ckpt, tmp_path / "b", link_unchanged=True)  # unchanged: a link, not a copy
    assert sorted(p.name for p in (tmp_path / "b").iterdir()) == [LINK_FILE]
    save_checkpoint(load_checkpoint(tmp_path / "b"), tmp_path / "c", link_unchanged=True)  # link to a link
    loaded = load_checkpoint(tmp_path / "c")
    assert torch.equal(loaded.masks[name], mask)
    assert torch.equal(loaded.model.get_submodule(name).weight, tiny_model.get_submodule(name).weight)
    save_checkpoint(ckpt, tmp_path / "d")  # without link_unchanged: a full copy
    assert (tmp_path / "d" / "config.json").is_file()


def test_broken_link_is_an_error_naming_the_path(tmp_path):
    from bird_bone.io.checkpoint import LINK_FILE

    (tmp_path / "x").mkdir()
    (tmp_path / "x" / LINK_FILE).write_text('{"link": "gone"}')
    with pytest.raises(ArtifactError, match="missing directory"):
        load_checkpoint(tmp_path / "x")
