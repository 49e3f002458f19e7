"""Model sources of the ``novaq`` command: Ollama store resolution (fake store). URL downloads are
tested against a local http.server in tests/reliability/test_downloads.py."""

from __future__ import annotations

import hashlib
import json

import pytest

from bird_bone.errors import ModelLoadError
from bird_bone.models.ollama import resolve_ollama, split_name


def fake_store(root, name="smollm2", tag="135m", data=b"GGUF" + b"\0" * 60):
    digest = hashlib.sha256(data).hexdigest()
    (root / "blobs").mkdir(parents=True)
    (root / "blobs" / f"sha256-{digest}").write_bytes(data)
    manifest = root / "manifests" / "registry.ollama.ai" / "library" / name / tag
    manifest.parent.mkdir(parents=True)
    layers = [
        {"mediaType": "application/vnd.ollama.image.template", "digest": "sha256:" + "0" * 64, "size": 3},
        {"mediaType": "application/vnd.ollama.image.model", "digest": f"sha256:{digest}", "size": len(data)},
    ]
    manifest.write_text(json.dumps({"schemaVersion": 2, "layers": layers}))
    return root / "blobs" / f"sha256-{digest}"


def test_ollama_manifest_resolves_to_the_model_blob(tmp_path, monkeypatch):
    blob = fake_store(tmp_path / "models")
    monkeypatch.setenv("OLLAMA_MODELS", str(tmp_path / "models"))
    assert resolve_ollama("smollm2:135m") == blob
    with pytest.raises(ModelLoadError, match="no manifest"):
        resolve_ollama("smollm2")  # tag defaults to latest, which is absent
    assert split_name("smollm2") == ("library", "smollm2", "latest")
    assert split_name("me/mine:q4") == ("me", "mine", "q4")
    with pytest.raises(ModelLoadError, match="not an Ollama model name"):
        split_name("../../etc:x")


def test_ollama_blob_missing_or_resized_is_reported(tmp_path):
    blob = fake_store(tmp_path)
    blob.write_bytes(b"GGUF")
    with pytest.raises(ModelLoadError, match="manifest says 64"):
        resolve_ollama("smollm2:135m", tmp_path)
    blob.unlink()
    with pytest.raises(ModelLoadError, match="is missing"):
        resolve_ollama("smollm2:135m", tmp_path)
