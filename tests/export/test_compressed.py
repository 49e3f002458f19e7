"""compressed-tensors export: weights, masks and sparsity metadata survive a transformers round trip."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors import safe_open
from transformers import LlamaConfig, LlamaForCausalLM

from bird_bone.errors import ArtifactError
from bird_bone.export.compressed import export_compressed, load_compressed, pick_group_size, target_linears


def tiny_llama(seed: int = 0) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=96, hidden_size=128, intermediate_size=192, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=False,
    )  # fmt: skip
    return LlamaForCausalLM(config).eval()


def prune_two_four(model) -> dict[str, torch.Tensor]:
    """Zero the two smallest of every four input weights of every target linear; the masks (True: pruned)."""
    masks = {}
    for name, module in target_linears(model).items():
        groups = module.weight.data.view(-1, 4)
        mask = torch.zeros_like(groups, dtype=torch.bool).scatter_(1, groups.abs().argsort(-1)[:, :2], True)
        groups[mask] = 0.0
        masks[name] = mask.view_as(module.weight)
    return masks


def stored_tensors(path) -> dict[str, torch.dtype]:
    with safe_open(str(path / "model.safetensors"), "pt") as f:
        return {k: f.get_slice(k).get_dtype() for k in f.keys()}


@pytest.mark.parametrize(
    ("scheme", "levels", "stored"),
    [("W4A16", 16, "weight_packed"), ("W8A16", 256, "weight_packed"), ("W8A8", 256, "weight")],
)
def test_quantized_round_trip_keeps_masks_and_grid(tmp_path, scheme, levels, stored):
    model = tiny_llama()
    masks = prune_two_four(model)
    original = {n: m.weight.detach().clone() for n, m in target_linears(model).items()}
    result = export_compressed(model, None, tmp_path / "ct", scheme, dtype=torch.float32)

    config = json.loads((tmp_path / "ct" / "config.json").read_text())["quantization_config"]
    assert config["quant_method"] == "compressed-tensors"
    assert config["sparsity_config"]["sparsity_structure"] == "2:4" == result.sparsity_structure
    assert config["sparsity_config"]["global_sparsity"] == pytest.approx(0.5)
    keys = stored_tensors(tmp_path / "ct")
    assert f"model.layers.0.mlp.down_proj.{stored}" in keys
    assert "lm_head.weight" in keys and "lm_head.weight_scale" not in keys  # the head stays dense

    loaded = load_compressed(tmp_path / "ct")
    for name, module in target_linears(loaded).items():
        weight = module.weight.detach()
        assert torch.equal(weight[masks[name]], torch.zeros_like(weight[masks[name]])), name
        # round to nearest on a symmetric grid: every weight within half a step of the original
        rows = original[name].reshape(original[name].shape[0], -1, result.group_size or original[name].shape[1])
        step = rows.abs().amax(-1, keepdim=True) / ((levels - 1) / 2)
        error = (weight.reshape_as(rows) - rows).abs()
        assert bool((error <= step / 2 * 1.001 + 1e-7).all()), name
        assert error.max() > 0, f"{name} was stored unrounded"
        for row in weight.reshape_as(rows)[:4]:
            assert all(torch.unique(group).numel() <= levels for group in row)
    assert model.model.layers[0].mlp.up_proj.weight.dtype == torch.float32  # the caller's model is untouched


def test_dense_export_records_two_four_and_loads_bitwise(tmp_path):
    model = tiny_llama(1)
    prune_two_four(model)
    result = export_compressed(model, None, tmp_path / "sparse", "dense", dtype=torch.float32)
    assert result.sparsity_structure == "2:4"
    loaded = load_compressed(tmp_path / "sparse")
    for (name, a), b in zip(model.state_dict().items(), loaded.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    ids = torch.randint(0, 96, (1, 12))
    assert torch.allclose(model(ids).logits, loaded(ids).logits)


def test_four_bit_is_smaller_than_dense(tmp_path):
    model = tiny_llama(2)
    dense = export_compressed(model, None, tmp_path / "dense", "dense")
    w4 = export_compressed(model, None, tmp_path / "w4", "W4A16")
    assert dense.sparsity_structure == "unstructured" and dense.global_sparsity == 0.0
    assert w4.size_bytes < dense.size_bytes


def test_unstructured_sparsity_is_not_called_two_four(tmp_path):
    model = tiny_llama(3)
    weight = model.model.layers[1].self_attn.o_proj.weight.data
    weight[:, :8] = 0.0  # zeros in two whole groups of four only
    result = export_compressed(model, None, tmp_path / "u", "dense")
    assert result.sparsity_structure == "unstructured" and 0 < result.global_sparsity < 0.01


def test_group_size_follows_the_widths():
    assert pick_group_size([576, 1536], None) == 64
    assert pick_group_size([128, 256], None) == 128
    with pytest.raises(ArtifactError, match="576"):
        pick_group_size([576], 128)


def test_ragged_mlp_and_unknown_scheme_fail_clearly(tmp_path):
    model = tiny_llama()
    with pytest.raises(ArtifactError, match="W5"):
        export_compressed(model, None, tmp_path / "x", "W5")
    layer = model.model.layers[0].mlp
    layer.gate_proj = torch.nn.Linear(128, 160, bias=False)
    with pytest.raises(ArtifactError, match="model.layers.0.mlp.gate_proj has 160 neurons"):
        export_compressed(model, None, tmp_path / "y", "W4A16")
    assert not (tmp_path / "y").exists()


def test_script_exports_a_checkpoint_and_names_a_missing_one(tmp_path, tiny_tokenizer, capsys):
    import importlib.util

    from bird_bone.io.checkpoint import Checkpoint, save_checkpoint
    from tests.conftest import ROOT, make_tiny_llama

    spec = importlib.util.spec_from_file_location("export_compressed", ROOT / "scripts" / "export_compressed.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    save_checkpoint(Checkpoint(make_tiny_llama(len(tiny_tokenizer)), tiny_tokenizer, {}), tmp_path / "ckpt")
    assert script.main(["--ckpt", str(tmp_path / "ckpt"), "--out", str(tmp_path / "ct"), "--scheme", "W8A8"]) == 0
    out = capsys.readouterr().out
    assert json.loads(out[out.index("{\n") :])["scheme"] == "W8A8"
    assert (tmp_path / "ct" / "tokenizer.json").is_file() or (tmp_path / "ct" / "tokenizer_config.json").is_file()
    group = json.loads((tmp_path / "ct" / "config.json").read_text())["quantization_config"]["config_groups"]
    assert group["group_0"]["weights"]["num_bits"] == 8 and group["group_0"]["input_activations"]["num_bits"] == 8
    assert load_compressed(tmp_path / "ct").model.layers[1].mlp.down_proj.weight.shape == (32, 64)
    assert script.main(["--ckpt", str(tmp_path / "nope"), "--out", str(tmp_path / "x")]) == 1
    assert f"checkpoint directory not found: {tmp_path / 'nope'}" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()
