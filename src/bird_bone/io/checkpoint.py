"""Model checkpoints as Hugging Face directories (safetensors + config + tokenizer), written
atomically, plus a ``bird_bone.json`` sidecar for provenance and stage metadata."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from bird_bone.errors import ArtifactError
from bird_bone.io.atomic import atomic_directory

METADATA_FILE = "bird_bone.json"


@dataclass
class Checkpoint:
    """A model with its tokenizer and metadata (provenance, stage, parameters)."""

    model: nn.Module
    tokenizer: object
    metadata: dict = field(default_factory=dict)


def save_checkpoint(checkpoint: Checkpoint, path: str | Path) -> Path:
    """Write the checkpoint to directory ``path`` in one atomic rename; returns ``path``."""
    path = Path(path)
    with atomic_directory(path) as tmp:
        checkpoint.model.save_pretrained(tmp)
        if checkpoint.tokenizer is not None:
            checkpoint.tokenizer.save_pretrained(tmp)
        (tmp / METADATA_FILE).write_text(json.dumps(checkpoint.metadata, indent=2, sort_keys=True, default=str))
    return path


def load_checkpoint(path: str | Path, dtype: torch.dtype | None = None) -> Checkpoint:
    """Read a checkpoint written by :func:`save_checkpoint`."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = Path(path)
    if not path.is_dir():
        raise ArtifactError(f"checkpoint directory not found: {path}")
    for required in ("config.json",):
        if not (path / required).is_file():
            raise ArtifactError(f"checkpoint {path} is incomplete: {required} is missing")
    if not any(path.glob("*.safetensors")):
        raise ArtifactError(f"checkpoint {path} is incomplete: no *.safetensors weights")
    try:
        model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype)
    except Exception as exc:
        raise ArtifactError(f"checkpoint {path} could not be loaded: {exc}") from exc
    model.eval()
    tokenizer = AutoTokenizer.from_pretrained(path) if (path / "tokenizer_config.json").is_file() else None
    meta_file = path / METADATA_FILE
    try:
        metadata = json.loads(meta_file.read_text()) if meta_file.is_file() else {}
    except json.JSONDecodeError as exc:
        raise ArtifactError(f"{meta_file} is not valid JSON: {exc}") from exc
    return Checkpoint(model, tokenizer, metadata)
