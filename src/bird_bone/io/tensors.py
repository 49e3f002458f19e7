"""Named tensor collections (masks, activation statistics) as safetensors files, written
atomically. Boolean masks are stored as safetensors BOOL (one byte each)."""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_bytes
from safetensors.torch import save as save_bytes

from bird_bone.errors import ArtifactError
from bird_bone.io.atomic import atomic_write_bytes


def save_tensors(tensors: dict[str, torch.Tensor], path: str | Path, metadata: dict[str, str] | None = None) -> None:
    """Write ``tensors`` to ``path`` (safetensors) atomically; metadata values must be strings."""
    bad = [name for name, t in tensors.items() if not isinstance(t, torch.Tensor)]
    if bad:
        raise ArtifactError(f"cannot save {path}: entries {bad[:5]} are not tensors")
    contiguous = {name: t.detach().cpu().contiguous() for name, t in tensors.items()}
    atomic_write_bytes(path, save_bytes(contiguous, metadata=metadata))


def load_tensors(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a safetensors file; a missing, truncated or corrupt file raises ArtifactError."""
    path = Path(path)
    if not path.is_file():
        raise ArtifactError(f"tensor file not found: {path}")
    try:
        return load_bytes(path.read_bytes())
    except (SafetensorError, ValueError, RuntimeError) as exc:
        raise ArtifactError(f"{path} is not a valid safetensors file (truncated or corrupt?): {exc}") from exc
