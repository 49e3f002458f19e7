"""Fingerprints that make a run reproducible and comparable: SHA-256 of every tensor and of the
whole state dict, a hash of the resolved parameters, library versions and the git commit."""

from __future__ import annotations

import hashlib
import json
import platform
import subprocess
from importlib import metadata
from pathlib import Path

import torch
from torch import nn

LIBRARIES = (
    "torch",
    "transformers",
    "tokenizers",
    "safetensors",
    "gguf",
    "peft",
    "bitsandbytes",
    "accelerate",
    "lm-eval",
    "kedro",
    "kedro-datasets",
    "dvc",
    "pydantic",
    "numpy",
)


def tensor_sha256(tensor: torch.Tensor) -> str:
    """SHA-256 of a tensor's raw bytes (row-major, on CPU); dtype and shape are recorded apart."""
    flat = tensor.detach().cpu().contiguous().reshape(-1)
    return hashlib.sha256(flat.view(torch.uint8).numpy().tobytes()).hexdigest()


def state_dict_fingerprint(model: nn.Module) -> dict:
    """``{"tensors": {name: {sha256, dtype, shape}}, "sha256": hash over the sorted entries}``."""
    tensors = {
        name: {"sha256": tensor_sha256(t), "dtype": str(t.dtype).removeprefix("torch."), "shape": list(t.shape)}
        for name, t in sorted(model.state_dict().items())
    }
    whole = hashlib.sha256()
    for name, entry in tensors.items():
        whole.update(f"{name}\t{entry['dtype']}\t{entry['shape']}\t{entry['sha256']}\n".encode())
    return {"sha256": whole.hexdigest(), "tensors": tensors}


def params_hash(params: dict) -> str:
    """SHA-256 of the parameters as canonical JSON (sorted keys, no whitespace)."""
    canonical = json.dumps(params, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


def library_versions() -> dict[str, str | None]:
    versions: dict[str, str | None] = {"python": platform.python_version()}
    for name in LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def git_state(path: str | Path = ".") -> dict:
    """Commit hash and whether the work tree has uncommitted changes; ``None`` outside git."""

    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=path, capture_output=True, text=True, check=True).stdout.strip()

    try:
        return {"commit": git("rev-parse", "HEAD"), "dirty": bool(git("status", "--porcelain", "--untracked-files=no"))}
    except (OSError, subprocess.CalledProcessError):
        return {"commit": None, "dirty": None}
