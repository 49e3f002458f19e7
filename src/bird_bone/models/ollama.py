"""Find the GGUF blob of a model pulled with Ollama, from its local store (no Ollama needed).

Layout (``$OLLAMA_MODELS``, else ``~/.ollama/models``): ``manifests/registry.ollama.ai/<namespace>/
<name>/<tag>`` is a JSON manifest whose layer of mediaType ``application/vnd.ollama.image.model``
has a digest ``sha256:<hex>``; the weights are ``blobs/sha256-<hex>``, a GGUF file.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

from bird_bone.errors import ModelLoadError

MODEL_MEDIA_TYPE = "application/vnd.ollama.image.model"
REGISTRY = "registry.ollama.ai"
_NAME = re.compile(r"^[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?$")
_DIGEST = re.compile(r"^sha256[:-]([0-9a-f]{64})$")


def ollama_models_dir() -> Path:
    return Path(os.environ.get("OLLAMA_MODELS") or Path.home() / ".ollama" / "models").expanduser()


def split_name(spec: str) -> tuple[str, str, str]:
    """``NAME[:TAG]`` or ``NAMESPACE/NAME[:TAG]`` -> (namespace, name, tag); tag defaults to latest."""
    name, _, tag = spec.strip().partition(":")
    tag = tag or "latest"
    if not _NAME.match(name) or not re.match(r"^[\w.-]+$", tag):
        raise ModelLoadError(f"'{spec}' is not an Ollama model name (NAME[:TAG], e.g. smollm2:135m)")
    namespace, _, short = name.rpartition("/")
    return namespace or "library", short, tag


def resolve_ollama(spec: str, models_dir: str | os.PathLike | None = None) -> Path:
    """Path of the GGUF blob for ``spec`` in the local Ollama store."""
    root = Path(models_dir) if models_dir else ollama_models_dir()
    namespace, name, tag = split_name(spec)
    manifest_path = root / "manifests" / REGISTRY / namespace / name / tag
    if not manifest_path.is_file():
        raise ModelLoadError(f"Ollama model '{spec}' not found: no manifest at {manifest_path} (run `ollama pull`?)")
    try:
        manifest = json.loads(manifest_path.read_text())
        layers = manifest["layers"]
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise ModelLoadError(f"{manifest_path} is not a valid Ollama manifest: {exc}") from None
    models = [layer for layer in layers if isinstance(layer, dict) and layer.get("mediaType") == MODEL_MEDIA_TYPE]
    if len(models) != 1:
        raise ModelLoadError(
            f"{manifest_path}: expected one layer of mediaType {MODEL_MEDIA_TYPE}, found {len(models)}"
        )
    match = _DIGEST.match(str(models[0].get("digest", "")))
    if not match:
        raise ModelLoadError(f"{manifest_path}: model layer digest {models[0].get('digest')!r} is not sha256:<hex>")
    blob = root / "blobs" / f"sha256-{match.group(1)}"
    if not blob.is_file():
        raise ModelLoadError(f"Ollama blob {blob} for '{spec}' is missing")
    size = models[0].get("size")
    if isinstance(size, int) and blob.stat().st_size != size:
        raise ModelLoadError(f"Ollama blob {blob} has {blob.stat().st_size} bytes, manifest says {size}")
    return blob
