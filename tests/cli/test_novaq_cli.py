"""The ``novaq`` command on a tiny model: compress, validate, stats, info, benchmark, and one-line
errors with a non-zero exit."""

from __future__ import annotations

import json

import pytest

from bird_bone.cli.novaq import main
from bird_bone.io.checkpoint import Checkpoint, save_checkpoint
from tests.conftest import TINY_TEXT, make_tiny_llama


@pytest.fixture
def tiny_dir(tmp_path, tiny_tokenizer, monkeypatch):
    monkeypatch.setenv("NOVAQ_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("NOVAQ_NUM_THREADS", "1")
    save_checkpoint(Checkpoint(make_tiny_llama(len(tiny_tokenizer), layers=1), tiny_tokenizer), tmp_path / "tiny")
    (tmp_path / "text.txt").write_text(TINY_TEXT)
    return tmp_path


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith("novaq: error: ") and "\n" not in err and "Traceback" not in err
    return err


def test_local_compress_then_validate_stats_info(tiny_dir, capsys):
    out = tiny_dir / "tiny.novaq"
    config = tiny_dir / "novaq-config.yaml"
    config.write_text("novaq:\n  kmeans_iterations: 3\n  refine:\n    calibration_windows: 2\n    window_length: 16\n")
    text = str(tiny_dir / "text.txt")
    code = main(["local", str(tiny_dir / "tiny"), "--codebook-size", "8", "--refine-steps", "3", "--config",
                 str(config), "--calibration-text", text, "-o", str(out), "--no-progress"])  # fmt: skip
    printed = capsys.readouterr().out
    assert code == 0 and f"wrote {out}" in printed and "refinement: 3 steps" in printed
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["novaq"]["codebook_size"] == 8 and manifest["novaq"]["kmeans_iterations"] == 3
    assert len(manifest["extra"]["refinement"]["losses"]) == 3
    assert main(["validate", str(out)]) == 0 and "logits match on 3 prompts" in capsys.readouterr().out
    assert main(["stats", str(out), "--json"]) == 0
    stats = json.loads(capsys.readouterr().out)
    assert stats["compression_vs_fp16"] > 1 and stats["bits_by_kind"]["indices"] > 0
    assert main(["info", str(out)]) == 0 and "novaq v3" in capsys.readouterr().out
    code = main(["benchmark", str(out), "--original-model", str(tiny_dir / "tiny"), "--text", text, "--windows",
                 "2", "--window-length", "16", "--no-progress"])  # fmt: skip
    table = capsys.readouterr().out
    assert code == 0 and table.count("\n| ") == 3 and str(out) in table


def test_validate_rejects_a_corrupt_file_in_one_line(tiny_dir, capsys):
    out = tiny_dir / "t.novaq"
    assert main(["local", str(tiny_dir / "tiny"), "--refine-steps", "0", "-o", str(out), "--no-progress"]) == 0
    shard = out / "shards" / "dense-00000.safetensors"
    data = bytearray(shard.read_bytes())
    data[-1] ^= 0xFF
    shard.write_bytes(bytes(data))
    capsys.readouterr()
    assert main(["validate", str(out)]) == 1
    assert "SHA-256 mismatch" in one_line_error(capsys)


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["local", "/nonexistent/model.gguf"], "not found"),
        (["validate", "/nonexistent/dir"], "manifest.json is missing"),
        (["ollama", "nosuchmodel:7b"], "not found: no manifest"),
        (["url", "ftp://example.com/x.gguf"], "only http and https"),
        (["local", "x", "--subspaces", "0"], "novaq.subspaces must be >= 1"),
    ],
)
def test_errors_are_one_line_and_non_zero(tiny_dir, capsys, monkeypatch, argv, expected):
    monkeypatch.setenv("OLLAMA_MODELS", str(tiny_dir / "ollama"))
    assert main(argv) == 1
    assert expected in one_line_error(capsys)


def test_help_and_usage_errors(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0 and "novaq benchmark" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exc:
        main(["hf"])
    assert exc.value.code == 2


def test_verbose_adds_the_traceback_before_the_one_line_error(tmp_path, capsys):
    assert main(["validate", str(tmp_path / "none")]) == 1
    assert "Traceback" not in capsys.readouterr().err
    assert main(["--verbose", "validate", str(tmp_path / "none")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[0].startswith("Traceback") and err[-1].startswith("novaq: error: ") and "manifest.json" in err[-1]
