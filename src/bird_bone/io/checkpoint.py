"""Model checkpoints as Hugging Face directories (safetensors + config + tokenizer), written
atomically, plus a ``bird_bone.json`` sidecar for provenance and stage metadata and, for a pruned
model, ``masks.safetensors`` (True where a weight is pruned).

A checkpoint that is saved unchanged to a second place (a wave that the stop-loss reverted, the
accepted model of a wave) is written as a link, ``bird_bone_link.json`` naming the directory that
holds it, instead of a second copy of the weights; loading follows the link."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from bird_bone.errors import ArtifactError
from bird_bone.io.atomic import atomic_directory
from bird_bone.lowrank.svd import low_rank_structure, replace_with_low_rank
from bird_bone.models.adapters import mlp_widths, resize_mlps
from bird_bone.models.loading import own_memory

METADATA_FILE = "bird_bone.json"
MASKS_FILE = "masks.safetensors"
LINK_FILE = "bird_bone_link.json"


@dataclass
class Checkpoint:
    """A model with its tokenizer, metadata (provenance, stage, parameters) and pruning masks.

    ``source`` is the directory the checkpoint was loaded from or last saved to, as long as the
    object has not been replaced; code that changes ``model`` in place must make a new Checkpoint.
    """

    model: nn.Module
    tokenizer: object
    metadata: dict = field(default_factory=dict)
    masks: dict[str, torch.Tensor] | None = None
    source: Path | None = field(default=None, compare=False, repr=False)


def _is_checkpoint_dir(path: Path) -> bool:
    return (path / "config.json").is_file() or (path / LINK_FILE).is_file()


def save_checkpoint(checkpoint: Checkpoint, path: str | Path, link_unchanged: bool = False) -> Path:
    """Write the checkpoint to directory ``path`` in one atomic rename; returns ``path``.

    With ``link_unchanged``, a checkpoint whose ``source`` is another saved directory is written as
    a link to it; one whose ``source`` is ``path`` itself is not rewritten.
    """
    path = Path(path)
    source = checkpoint.source
    if link_unchanged and source is not None and _is_checkpoint_dir(source):
        if source.resolve() == path.resolve():
            return path
        with atomic_directory(path) as tmp:
            target = os.path.relpath(_resolve_link(source).resolve(), path.resolve().parent)
            (tmp / LINK_FILE).write_text(json.dumps({"link": target}))
        return path
    metadata = dict(checkpoint.metadata)
    widths = _ragged_mlp_widths(checkpoint.model)
    if widths:
        metadata["mlp_widths"] = widths
    low_rank = low_rank_structure(checkpoint.model)
    if low_rank:
        metadata["low_rank"] = low_rank
    with atomic_directory(path) as tmp:
        checkpoint.model.save_pretrained(tmp)
        if checkpoint.tokenizer is not None:
            checkpoint.tokenizer.save_pretrained(tmp)
        (tmp / METADATA_FILE).write_text(json.dumps(metadata, indent=2, sort_keys=True, default=str))
        if checkpoint.masks is not None:
            save_file({k: v.contiguous() for k, v in checkpoint.masks.items()}, tmp / MASKS_FILE)
    checkpoint.source = path
    return path


def _resolve_link(path: Path) -> Path:
    """The directory that holds the weights of checkpoint ``path`` (following links)."""
    seen = set()
    while (path / LINK_FILE).is_file():
        if path.resolve() in seen:
            raise ArtifactError(f"checkpoint link loop at {path}")
        seen.add(path.resolve())
        try:
            target = json.loads((path / LINK_FILE).read_text())["link"]
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            raise ArtifactError(f"{path / LINK_FILE} is not a valid checkpoint link: {exc}") from exc
        path = (path.parent / target).resolve()
        if not path.is_dir():
            raise ArtifactError(f"checkpoint link {path} points to a missing directory")
    return path


def _ragged_mlp_widths(model: nn.Module) -> list[int] | None:
    """Per-layer MLP widths when structured pruning made them differ from the config's."""
    try:
        widths = mlp_widths(model)
    except TypeError:
        return None
    return widths if any(w != model.config.intermediate_size for w in widths) else None


def _load_ragged(path: Path, widths: list[int] | None, dtype, low_rank: dict[str, int] | None = None):
    """Build the architecture, cut its MLPs to ``widths`` and put low-rank factors where
    ``low_rank`` says, then load the safetensors weights."""
    from transformers import AutoConfig, AutoModelForCausalLM

    model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(path), dtype=dtype)
    if widths:
        resize_mlps(model, widths)
    for name, rank in (low_rank or {}).items():
        replace_with_low_rank(model, name, rank)
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

    given = Path(path)
    if not given.is_dir():
        raise ArtifactError(f"checkpoint directory not found: {given}")
    path = _resolve_link(given)
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
        if metadata.get("mlp_widths") or metadata.get("low_rank"):
            model = _load_ragged(path, metadata.get("mlp_widths"), dtype, metadata.get("low_rank"))
        else:
            model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype)
            own_memory(model)  # out of the copy-on-write file mapping (see own_memory)
    except ArtifactError:
        raise
    except Exception as exc:
        raise ArtifactError(f"checkpoint {path} could not be loaded: {exc}") from exc
    model.eval()
    tokenizer = AutoTokenizer.from_pretrained(path) if (path / "tokenizer_config.json").is_file() else None
    masks = None
    if (path / MASKS_FILE).is_file():
        try:
            masks = load_file(path / MASKS_FILE)
        except Exception as exc:
            raise ArtifactError(f"{path / MASKS_FILE} is not a valid safetensors file: {exc}") from exc
    return Checkpoint(model, tokenizer, metadata, masks, source=given)


def weights_directory(path: str | Path) -> Path:
    """The directory that holds checkpoint ``path``'s weights: ``path`` itself, or where its links lead."""
    return _resolve_link(Path(path))


def _safetensors_problem(path: Path) -> str | None:
    """Why ``path`` is not a whole safetensors file (header, offsets and size), or None."""
    size = path.stat().st_size
    try:
        with open(path, "rb") as handle:
            length = int.from_bytes(handle.read(8), "little")
            if size < 8 or length > size - 8:
                return f"{path} is truncated ({size} bytes)"
            header = json.loads(handle.read(length))
        ends = [int(v["data_offsets"][1]) for k, v in header.items() if k != "__metadata__"]
    except (ValueError, KeyError, TypeError, IndexError) as exc:
        return f"{path} has a damaged header ({exc})"
    if 8 + length + max(ends, default=0) != size:
        return f"{path} is truncated or padded: {size} bytes, its header describes {8 + length + max(ends, default=0)}"
    return None


def checkpoint_problem(path: str | Path) -> str | None:
    """Why checkpoint ``path`` cannot be loaded whole (missing, broken link, damaged files), or None.

    Cheap: it reads headers, not weights, so a resumed run can tell a damaged checkpoint of a finished
    wave (killed mid-copy, disk trouble) from a good one before relying on it."""
    try:
        root = _resolve_link(Path(path))
    except ArtifactError as exc:
        return str(exc)
    if not (root / "config.json").is_file():
        return f"checkpoint {root} is incomplete: config.json is missing"
    files = sorted(root.glob("*.safetensors"))
    if not any(f.name != MASKS_FILE for f in files):
        return f"checkpoint {root} is incomplete: no *.safetensors weights"
    for json_file in (root / "config.json", root / METADATA_FILE):
        try:
            if json_file.is_file():
                json.loads(json_file.read_text())
        except (OSError, ValueError) as exc:
            return f"{json_file} is not valid JSON ({exc})"
    return next(filter(None, map(_safetensors_problem, files)), None)
