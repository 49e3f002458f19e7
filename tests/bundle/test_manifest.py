"""The weight manifest and its pre-commit hook: hashes every weight file, rewrites the manifest (and
fails the hook) only when weights changed, keeps entries of weights that are not pulled here."""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import sys

import pytest

from bird_bone.bundle.manifest import build_manifest, find_weight_files, read_manifest
from tests.conftest import ROOT

SCRIPT = ROOT / "scripts" / "weight_manifest.py"


def hook(root, *args):
    env = {"PYTHONPATH": str(ROOT / "src"), "PATH": "/usr/bin:/bin"}
    return subprocess.run([sys.executable, str(SCRIPT), "--root", str(root), *args], env=env, capture_output=True)


def write(path, data: bytes):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def test_finds_checkpoints_exports_and_masks_but_not_temporaries(tmp_path):
    write(tmp_path / "models/pruned/model.safetensors", b"w")
    write(tmp_path / "models/smol.Q4_K_M.gguf", b"g")
    write(tmp_path / "data/06_models/masks/wave_1.safetensors", b"m")
    write(tmp_path / "models/pruned/.model.safetensors.x1.tmp", b"t")
    write(tmp_path / "models/.pruned.old-1/model.safetensors", b"o")
    write(tmp_path / "data/03_primary/activation_statistics.safetensors", b"s")
    assert find_weight_files(tmp_path) == [
        "data/06_models/masks/wave_1.safetensors",
        "models/pruned/model.safetensors",
        "models/smol.Q4_K_M.gguf",
    ]


def test_hook_records_changes_and_passes_when_up_to_date(tmp_path):
    weights = tmp_path / "models/pruned/model.safetensors"
    write(weights, b"first weights")
    manifest = tmp_path / "weights.manifest.json"
    assert hook(tmp_path).returncode == 1  # written: the commit stops so the manifest can be staged
    entry = json.loads(manifest.read_text())["files"]["models/pruned/model.safetensors"]
    assert entry == {"sha256": hashlib.sha256(b"first weights").hexdigest(), "bytes": 13}
    assert hook(tmp_path).returncode == 0 and hook(tmp_path, "--check").returncode == 0

    write(weights, b"other weights")
    assert hook(tmp_path, "--check").returncode == 1
    assert json.loads(manifest.read_text())["files"]["models/pruned/model.safetensors"] == entry  # check wrote nothing
    assert hook(tmp_path).returncode == 1
    assert json.loads(manifest.read_text())["files"]["models/pruned/model.safetensors"]["sha256"] == (
        hashlib.sha256(b"other weights").hexdigest()
    )


def test_absent_weights_keep_their_entry_unless_pruned(tmp_path):
    write(tmp_path / "models/a.gguf", b"a")
    write(tmp_path / "models/b.gguf", b"b")
    recorded = build_manifest(tmp_path)
    (tmp_path / "models/a.gguf").unlink()  # e.g. a fresh clone that has not run `dvc pull`
    assert build_manifest(tmp_path, recorded) == recorded
    assert list(build_manifest(tmp_path, recorded, prune_missing=True)["files"]) == ["models/b.gguf"]


def test_committed_manifest_is_as_the_hook_writes_it_and_names_only_weight_files(tmp_path):
    text = (ROOT / "weights.manifest.json").read_text()
    data = read_manifest(ROOT / "weights.manifest.json")
    assert text == json.dumps(data, indent=1) + "\n"  # byte for byte what update_manifest writes
    assert set(data) == {"format", "version", "files"} and data["version"] == 1
    for path, entry in data["files"].items():
        assert set(entry) == {"sha256", "bytes"} and re.fullmatch("[0-9a-f]{64}", entry["sha256"]), path
        assert isinstance(entry["bytes"], int) and entry["bytes"] >= 0, path
        write(tmp_path / path, b"")
    assert find_weight_files(tmp_path) == sorted(data["files"])  # every entry is a path the hook records
    (tmp_path / "other.json").write_text(json.dumps({**data, "format": "something-else"}))
    with pytest.raises(ValueError, match="is not a bird-bone weight manifest"):
        read_manifest(tmp_path / "other.json")
