"""The NOVAQ directory format: round trip to identical logits, and rejection of corrupt or
unsafe files (flipped byte, truncated shard, manifest escaping its directory)."""

from __future__ import annotations

import json

import pytest
import torch

from bird_bone.export.novaq_format import FORMAT_VERSION, MANIFEST, NOVAQ_SHARD, NovaqFormatError, write_novaq
from bird_bone.export.novaq_read import read_novaq, validate_novaq
from bird_bone.export.novaq_schema import seal
from bird_bone.quant.novaq import NovaqConfig, apply_quantized, bit_accounting, quantize_model
from tests.conftest import make_tiny_llama


@pytest.fixture
def novaq_dir(tmp_path, tiny_tokenizer):
    model = make_tiny_llama(len(tiny_tokenizer), layers=1)
    config = NovaqConfig(codebook_size=8, residual_codebook_size=4, kmeans_iterations=5)
    quantized = quantize_model(model, config, progress=False)
    stats = bit_accounting(model, quantized)
    path = tmp_path / "tiny.novaq"
    write_novaq(path, model, tiny_tokenizer, quantized, config.to_dict(), statistics=stats)
    expected = apply_quantized(model, quantized)
    return path, expected, tiny_tokenizer


def _edit_manifest(path, change, reseal=True):
    """Edit the manifest; ``reseal`` records the new digest, so the deeper checks are reached."""
    manifest = json.loads((path / MANIFEST).read_text())
    change(manifest)
    (path / MANIFEST).write_text(json.dumps(seal(manifest) if reseal else manifest))


def test_an_edited_manifest_breaks_its_seal(novaq_dir):
    path = novaq_dir[0]
    _edit_manifest(path, lambda m: m["model"]["config"].__setitem__("rms_norm_eps", 0.5), reseal=False)
    with pytest.raises(NovaqFormatError, match="manifest_sha256 mismatch"):
        read_novaq(path)


def test_round_trip_gives_identical_logits(novaq_dir):
    path, expected, tok = novaq_dir
    model, tokenizer, manifest = read_novaq(path)
    ids = torch.tensor([tok("The cat sat on the mat.")["input_ids"]])
    with torch.no_grad():
        got, want = model(input_ids=ids).logits, expected(input_ids=ids).logits
    # the file stores the non-quantized tensors (norms, embeddings) in float16
    assert torch.allclose(got, want, atol=5e-3)
    assert manifest["format"] == "novaq" and manifest["format_version"] == FORMAT_VERSION
    assert manifest["novaq"]["codebook_size"] == 8
    entry = manifest["tensors"]["model.layers.0.mlp.down_proj.weight"]
    assert entry["encoding"] == "novaq-rvq2" and entry["index_bits"] == [3, 2]
    assert manifest["tensors"]["model.norm.weight"]["encoding"] == "dense"
    assert all(len(f["sha256"]) == 64 for f in manifest["files"].values())
    assert manifest["statistics"]["shard_bytes"] > 0 and manifest["statistics"]["quantized_bits_per_weight"] > 1
    assert tokenizer("The cat")["input_ids"] == tok("The cat")["input_ids"]
    summary = validate_novaq(path)
    assert summary["max_logit_difference"] == 0.0 and summary["prompts"] == 3
    assert not list(path.parent.glob(".tiny.novaq*"))  # no temporary left behind


def test_flipped_byte_is_rejected(novaq_dir):
    path = novaq_dir[0]
    shard = path / NOVAQ_SHARD
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0x01
    shard.write_bytes(bytes(data))
    with pytest.raises(NovaqFormatError, match="SHA-256 mismatch"):
        read_novaq(path)


def test_truncated_shard_is_rejected(novaq_dir):
    path = novaq_dir[0]
    shard = path / NOVAQ_SHARD
    shard.write_bytes(shard.read_bytes()[:-10])
    with pytest.raises(NovaqFormatError, match="truncated"):
        validate_novaq(path)


@pytest.mark.parametrize("bad", ["../outside.safetensors", "/etc/passwd", "shards/../../x"])
def test_manifest_pointing_outside_is_rejected(novaq_dir, bad):
    path = novaq_dir[0]

    def change(m):
        m["files"][bad] = dict(m["files"][NOVAQ_SHARD])

    _edit_manifest(path, change)
    with pytest.raises(NovaqFormatError, match="points outside"):
        read_novaq(path)


def test_symlink_escaping_the_directory_is_rejected(novaq_dir, tmp_path):
    path = novaq_dir[0]
    outside = tmp_path / "elsewhere.safetensors"
    (path / NOVAQ_SHARD).rename(outside)
    (path / NOVAQ_SHARD).symlink_to(outside)
    with pytest.raises(NovaqFormatError, match="outside"):
        read_novaq(path)


def test_changed_verification_logits_are_detected(novaq_dir):
    path = novaq_dir[0]
    _edit_manifest(path, lambda m: m["verification"]["prompts"][0]["top_logits"][0].__setitem__(0, 99.0))
    with pytest.raises(NovaqFormatError, match="differ from the recorded"):
        validate_novaq(path)


def test_wrong_version_and_missing_manifest(novaq_dir, tmp_path):
    path = novaq_dir[0]
    _edit_manifest(path, lambda m: m.__setitem__("format_version", 99))
    with pytest.raises(NovaqFormatError, match="format_version 99"):
        read_novaq(path)
    with pytest.raises(NovaqFormatError, match="manifest.json is missing"):
        read_novaq(tmp_path / "nothing")


def test_no_pickle_files_are_written(novaq_dir):
    path = novaq_dir[0]
    suffixes = {p.suffix for p in path.rglob("*") if p.is_file()}
    assert suffixes <= {".json", ".safetensors", ".txt", ".model", ".jinja"}
    assert ".bin" not in suffixes and ".pt" not in suffixes


def test_activation_aware_tensors_round_trip(tmp_path, tiny_tokenizer):
    from bird_bone.quant.activations import input_second_moments

    model = make_tiny_llama(len(tiny_tokenizer), layers=1)
    config = NovaqConfig(kmeans_iterations=3, activation_aware=True)
    names = [n for n, p in model.named_parameters() if ".layers." in n and p.ndim == 2]
    energies = input_second_moments(model, torch.randint(0, 300, (2, 8)), names, progress=False)
    quantized = quantize_model(model, config, progress=False, energies=energies)
    write_novaq(tmp_path / "aw", model, tiny_tokenizer, quantized, config.to_dict())
    manifest = json.loads((tmp_path / "aw" / MANIFEST).read_text())
    assert all(manifest["tensors"][n]["column_scale"] for n in names)
    rebuilt, _, _ = read_novaq(tmp_path / "aw")
    params = dict(rebuilt.named_parameters())
    assert torch.allclose(params[names[0]], quantized[names[0]].decode(), atol=1e-6)


def test_tiled_hessian_aware_tensors_round_trip(tmp_path, tiny_tokenizer):
    from bird_bone.quant.novaq import quantize_model_hessian

    model = make_tiny_llama(len(tiny_tokenizer), layers=1)
    config = NovaqConfig(codebook_size=8, residual_codebook_size=2, group_rows=16, group_cols=32, kmeans_iterations=3)
    quantized = quantize_model_hessian(model, config, torch.randint(0, 300, (2, 16)), progress=False)
    write_novaq(tmp_path / "tiled", model, tiny_tokenizer, quantized, config.to_dict())
    manifest = json.loads((tmp_path / "tiled" / MANIFEST).read_text())
    name = "model.layers.0.mlp.down_proj.weight"
    assert manifest["tensors"][name]["tile"] == [16, 32]
    assert manifest["tensors"][name]["groups"] == quantized[name].primary.shape[0] > 1
    rebuilt, _, _ = read_novaq(tmp_path / "tiled")
    assert torch.allclose(dict(rebuilt.named_parameters())[name], quantized[name].decode(), atol=1e-6)
    assert validate_novaq(tmp_path / "tiled")["max_logit_difference"] == 0.0


def test_version_1_manifest_without_tiles_still_reads(novaq_dir):
    path, expected, tok = novaq_dir

    def as_version_1(manifest):
        manifest["format_version"] = 1
        for entry in manifest["tensors"].values():
            entry.pop("tile", None)

    _edit_manifest(path, as_version_1)
    model, _, _ = read_novaq(path)
    ids = torch.tensor([tok("The cat sat")["input_ids"]])
    with torch.no_grad():
        assert torch.allclose(model(input_ids=ids).logits, expected(input_ids=ids).logits, atol=5e-3)


def test_tile_that_does_not_divide_the_shape_is_rejected(novaq_dir):
    path = novaq_dir[0]
    name = "model.layers.0.mlp.down_proj.weight"
    _edit_manifest(path, lambda m: m["tensors"][name].__setitem__("tile", [3, 5]))
    with pytest.raises(NovaqFormatError, match="tile"):
        read_novaq(path)


def test_every_row_scaled_stores_no_row_indices(tmp_path, tiny_tokenizer):
    model = make_tiny_llama(len(tiny_tokenizer), layers=1)
    config = NovaqConfig(codebook_size=8, residual_codebook_size=2, outlier_threshold=1.0, kmeans_iterations=3)
    quantized = quantize_model(model, config, progress=False)
    name = "model.layers.0.self_attn.q_proj.weight"
    q = quantized[name]
    assert q.scales_every_row and q.bits()["outlier_metadata"] == 0 and q.bits()["scales"] == q.shape[0] * 16
    write_novaq(tmp_path / "rows", model, tiny_tokenizer, quantized, config.to_dict())
    manifest = json.loads((tmp_path / "rows" / MANIFEST).read_text())
    assert manifest["tensors"][name]["normalization"]["all_rows"] is True
    rebuilt, _, _ = read_novaq(tmp_path / "rows")
    assert torch.allclose(dict(rebuilt.named_parameters())[name], q.decode(), atol=1e-6)
    assert validate_novaq(tmp_path / "rows")["max_logit_difference"] == 0.0
