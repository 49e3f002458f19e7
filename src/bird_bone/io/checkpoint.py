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
from bird_bone.models.adapters import mlp_widths, resize_mlps

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
    metadata = dict(checkpoint.metadata)
    widths = _ragged_mlp_widths(checkpoint.model)
    if widths:
        metadata["mlp_widths"] = widths
    with atomic_directory(path) as tmp:
        checkpoint.model.save_pretrained(tmp)
        if checkpoint.tokenizer is not None:
            checkpoint.tokenizer.save_pretrained(tmp)
        (tmp / METADATA_FILE).write_text(json.dumps(metadata, indent=2, sort_keys=True, default=str))
    return path


def _ragged_mlp_widths(model: nn.Module) -> list[int] | None:
    """Per-layer MLP widths when structured pruning made them differ from the config's."""
    try:
        widths = mlp_widths(model)
    except TypeError:
        return None
    return widths if any(w != model.config.intermediate_size for w in widths) else None


def _load_ragged(path: Path, widths: list[int], dtype):
    """Build the architecture, cut its MLPs to ``widths``, then load the safetensors weights."""
    from safetensors.torch import load_file
    from transformers import AutoConfig, AutoModelForCausalLM

    model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(path), dtype=dtype)
    resize_mlps(model, widths)
    state = {}
    for shard in sorted(path.glob("*.safetensors")):
        state.update(load_file(shard))
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [k for k in missing if not (model.config.tie_word_embeddings and k == "lm_head.weight")]
    if missing or unexpected:
        raise ArtifactError(f"checkpoint {path}: missing tensors {missing[:3]}, unexpected {unexpected[:3]}")
    model.tie_weights()
    return model


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
    meta_file = path / METADATA_FILE
    try:
        metadata = json.loads(meta_file.read_text()) if meta_file.is_file() else {}
    except json.JSONDecodeError as exc:
        raise ArtifactError(f"{meta_file} is not valid JSON: {exc}") from exc
    try:
        if metadata.get("mlp_widths"):
            model = _load_ragged(path, metadata["mlp_widths"], dtype)
        else:
            model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype)
    except ArtifactError:
        raise
    except Exception as exc:
        raise ArtifactError(f"checkpoint {path} could not be loaded: {exc}") from exc
    model.eval()
    tokenizer = AutoTokenizer.from_pretrained(path) if (path / "tokenizer_config.json").is_file() else None
    return Checkpoint(model, tokenizer, metadata)
