"""scripts/export_gguf.py on a tiny checkpoint: writes a GGUF with its importance matrix file, and
a checkpoint that is not there fails with one line naming it; a NOVAQ directory is exported only if
``novaq validate`` accepts it, and the GGUF records its NOVAQ parameters."""

from __future__ import annotations

import importlib.util
import json

import torch

from bird_bone.export.gguf import describe_gguf
from bird_bone.export.imatrix import read_imatrix
from bird_bone.io.checkpoint import Checkpoint, save_checkpoint
from bird_bone.io.tensors import save_tensors
from tests.conftest import ROOT, make_tiny_llama


def _script():
    spec = importlib.util.spec_from_file_location("export_gguf", ROOT / "scripts" / "export_gguf.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_script_exports_a_checkpoint_with_an_importance_matrix(tmp_path, tiny_tokenizer, capsys):
    model = make_tiny_llama(len(tiny_tokenizer))
    save_checkpoint(Checkpoint(model, tiny_tokenizer, {"stage": "prune"}), tmp_path / "ckpt")
    stats = {"model.layers.0.mlp.down_proj.input_sq_norms": torch.rand(64) + 0.5}
    save_tensors(stats, tmp_path / "stats.safetensors")
    argv = ["--ckpt", str(tmp_path / "ckpt"), "--out", str(tmp_path / "tiny.gguf"), "--type", "Q3_K_M",
            "--imatrix-stats", str(tmp_path / "stats.safetensors"), "--calibration-tokens", "640",
            "--imatrix-out", str(tmp_path / "imatrix.gguf")]  # fmt: skip
    assert _script().main(argv) == 0
    out = capsys.readouterr().out  # log handlers other tests installed may write here too
    printed = json.loads(out[out.index("{\n") :])
    assert printed["type"] == "Q3_K_M" and printed["imatrix"] == {"entries": 1, "tokens": 640.0}
    assert describe_gguf(tmp_path / "tiny.gguf").type == "Q3_K_M"
    assert read_imatrix(tmp_path / "imatrix.gguf")["blk.0.ffn_down.weight"].count == 640.0


def test_script_names_a_missing_checkpoint(tmp_path, capsys):
    assert _script().main(["--ckpt", str(tmp_path / "nope"), "--out", str(tmp_path / "x.gguf")]) == 1
    assert f"checkpoint directory not found: {tmp_path / 'nope'}" in capsys.readouterr().err
    assert not (tmp_path / "x.gguf").exists()


def _novaq_dir(tmp_path, tokenizer):
    from bird_bone.export.novaq_format import write_novaq
    from bird_bone.quant.novaq import NovaqConfig, quantize_model

    model = make_tiny_llama(len(tokenizer), layers=1)
    config = NovaqConfig(codebook_size=4, residual_codebook_size=2, kmeans_iterations=2)
    write_novaq(tmp_path / "n.novaq", model, tokenizer, quantize_model(model, config, progress=False), config.to_dict())
    return tmp_path / "n.novaq"


def test_script_records_the_novaq_parameters_it_exported(tmp_path, tiny_tokenizer):
    import gguf

    path = _novaq_dir(tmp_path, tiny_tokenizer)
    assert _script().main(["--ckpt", str(path), "--out", str(tmp_path / "n.gguf"), "--type", "F16"]) == 0
    recorded = json.loads(gguf.GGUFReader(tmp_path / "n.gguf").fields["bird_bone.metadata"].contents())
    assert recorded["stage"] == "novaq" and recorded["novaq_parameters"]["codebook_size"] == 4


def test_script_rejects_a_novaq_dir_that_validate_rejects(tmp_path, tiny_tokenizer, capsys):
    from bird_bone.cli.novaq import main as novaq

    path = _novaq_dir(tmp_path, tiny_tokenizer)
    manifest = json.loads((path / "manifest.json").read_text())
    manifest["model"]["config"]["rms_norm_eps"] = 0.5
    (path / "manifest.json").write_text(json.dumps(manifest))
    assert novaq(["validate", str(path)]) == 1
    capsys.readouterr()
    assert _script().main(["--ckpt", str(path), "--out", str(tmp_path / "n.gguf")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "manifest_sha256 mismatch" in err[0] and not (tmp_path / "n.gguf").exists()
    assert _script().main(["--ckpt", str(path), "--out", str(tmp_path / "n.gguf"), "--verbose"]) == 1
    assert "Traceback" in capsys.readouterr().err
