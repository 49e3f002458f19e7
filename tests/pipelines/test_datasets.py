"""The Kedro datasets: checkpoints and tensor collections round-trip, a wave's masks are written once,
JSON/text writes are atomic."""

import json
import os

import pytest
import torch
from kedro.io import DataCatalog

from bird_bone.io.checkpoint import LINK_FILE, MASKS_FILE, Checkpoint
from bird_bone.io.tensors import load_tensors
from bird_bone.pipelines.datasets import AtomicJSONDataset, AtomicTextDataset, CheckpointDataset, TensorsDataset


def test_checkpoint_dataset_from_catalog_config(tmp_path, tiny_model, tiny_tokenizer):
    catalog = DataCatalog.from_config(
        {"ckpt": {"type": "bird_bone.pipelines.datasets.CheckpointDataset", "path": str(tmp_path / "ckpt")}}
    )
    assert not catalog.exists("ckpt")
    catalog.save("ckpt", Checkpoint(tiny_model, tiny_tokenizer, {"wave": 1}))
    assert catalog.exists("ckpt")
    loaded = catalog.load("ckpt")
    assert loaded.metadata == {"wave": 1}
    assert torch.equal(loaded.model.lm_head.weight, tiny_model.lm_head.weight)


def test_tensors_dataset_round_trip(tmp_path):
    dataset = TensorsDataset(filepath=str(tmp_path / "masks" / "wave_1.safetensors"))
    masks = {"model.layers.0.mlp.up_proj": torch.rand(8, 4) > 0.5}
    dataset.save(masks)
    assert dataset.exists()
    assert torch.equal(dataset.load()["model.layers.0.mlp.up_proj"], masks["model.layers.0.mlp.up_proj"])


def test_atomic_json_and_text_datasets(tmp_path):
    json_ds = AtomicJSONDataset(filepath=str(tmp_path / "m.json"), save_args={"indent": 1})
    json_ds.save({"perplexity": 28.93})
    assert json.loads((tmp_path / "m.json").read_text()) == {"perplexity": 28.93}
    assert json_ds.load() == {"perplexity": 28.93}
    with pytest.raises(Exception):  # noqa: B017 - any serialisation error; the old file must survive
        json_ds.save({"bad": object()})
    assert json_ds.load() == {"perplexity": 28.93}
    text_ds = AtomicTextDataset(filepath=str(tmp_path / "r.md"))
    text_ds.save("# report\n")
    assert text_ds.load() == "# report\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.json", "r.md"]


def test_checkpoint_masks_are_written_once_and_named_twice(tmp_path, tiny_model, tiny_tokenizer):
    name = "model.layers.0.mlp.up_proj"
    masks = {name: torch.rand(64, 32, generator=torch.Generator().manual_seed(0)) > 0.5}

    def dataset(k: int, link: bool = True) -> CheckpointDataset:
        masks_link = str(tmp_path / f"masks/wave_{k}.safetensors")
        return CheckpointDataset(path=str(tmp_path / f"wave_{k}"), link_unchanged=link, masks_link=masks_link)

    checkpoint = Checkpoint(tiny_model, tiny_tokenizer, {}, masks)
    dataset(1).save(checkpoint)
    inside = tmp_path / "wave_1" / MASKS_FILE
    assert os.path.samefile(inside, tmp_path / "masks/wave_1.safetensors")  # one file, two names
    assert torch.equal(load_tensors(tmp_path / "masks/wave_1.safetensors")[name], masks[name])
    dataset(2).save(checkpoint)  # unchanged (its source is wave_1 now): a link, and the same masks file
    assert (tmp_path / "wave_2" / LINK_FILE).is_file() and not (tmp_path / "wave_2" / MASKS_FILE).exists()
    assert os.path.samefile(inside, tmp_path / "masks/wave_2.safetensors")
    assert torch.equal(dataset(2).load().masks[name], masks[name])
    dataset(3, link=False).save(Checkpoint(tiny_model, tiny_tokenizer))  # no masks: an empty tensor file
    assert load_tensors(tmp_path / "masks/wave_3.safetensors") == {}
    assert sorted(p.name for p in (tmp_path / "masks").iterdir()) == [f"wave_{k}.safetensors" for k in (1, 2, 3)]
