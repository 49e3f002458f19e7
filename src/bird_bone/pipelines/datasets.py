"""Kedro datasets for bird-bone artifacts: model checkpoints, tensor collections, and JSON/text
files written atomically (kedro-datasets writes in place; a killed run would leave half a file).
The reading and writing itself lives in the pure library (``bird_bone.io``)."""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path, PurePosixPath
from typing import Any

from kedro.io import AbstractDataset
from kedro_datasets.json import JSONDataset
from kedro_datasets.text import TextDataset

from bird_bone.errors import ArtifactError
from bird_bone.io.atomic import atomic_path, atomic_write_text, strict_json
from bird_bone.io.checkpoint import (
    LINK_FILE,
    MASKS_FILE,
    Checkpoint,
    checkpoint_problem,
    load_checkpoint,
    save_checkpoint,
    weights_directory,
)
from bird_bone.io.tensors import load_tensors, save_tensors

log = logging.getLogger(__name__)


class CheckpointDataset(AbstractDataset[Checkpoint, Checkpoint]):
    """A model checkpoint directory: safetensors + config + tokenizer + ``bird_bone.json``.

    ``link_unchanged``: a checkpoint saved unchanged from another directory becomes a link to it
    (see :mod:`bird_bone.io.checkpoint`), so an accepted or reverted wave costs no second copy.
    ``masks_link``: a second name for the checkpoint's masks file (a hard link, so the masks are
    written once; an empty tensor file when the checkpoint has none), e.g. a wave's masks under
    ``data/06_models/masks``.
    """

    def __init__(
        self,
        path: str,
        link_unchanged: bool = False,
        masks_link: str | None = None,
        metadata: dict[str, Any] | None = None,
    ):
        self._path = Path(path)
        self._link_unchanged = link_unchanged
        self._masks_link = Path(masks_link) if masks_link else None
        self.metadata = metadata

    def load(self) -> Checkpoint:
        return load_checkpoint(self._path)

    def save(self, data: Checkpoint) -> None:
        save_checkpoint(data, self._path, link_unchanged=self._link_unchanged)
        if self._masks_link is not None:
            _link_file(weights_directory(self._path) / MASKS_FILE, self._masks_link)

    def _exists(self) -> bool:
        return (self._path / "config.json").is_file() or (self._path / LINK_FILE).is_file()

    def _describe(self) -> dict[str, Any]:
        return {"path": str(self._path), "masks_link": str(self._masks_link) if self._masks_link else None}


def _link_file(source: Path, target: Path) -> None:
    """Give ``source`` the second name ``target`` atomically (a hard link where the filesystem
    allows, else a copy); a missing ``source`` gives an empty safetensors file."""
    if source.is_file() and target.is_file() and os.path.samefile(source, target):
        return  # already (rename onto a second name of the same file would do nothing)
    with atomic_path(target) as tmp:
        tmp.unlink()
        if not source.is_file():
            save_tensors({}, tmp)
            return
        try:
            os.link(source, tmp)
        except OSError:
            shutil.copyfile(source, tmp)


class TensorsDataset(AbstractDataset[dict, dict]):
    """A named tensor collection (masks, statistics) in one safetensors file. With ``key``, the
    dataset holds a single tensor, stored under that name."""

    def __init__(self, filepath: str, key: str | None = None, metadata: dict[str, Any] | None = None):
        self._filepath = Path(filepath)
        self._key = key
        self.metadata = metadata

    def load(self):
        tensors = load_tensors(self._filepath)
        return tensors[self._key] if self._key else tensors

    def save(self, data) -> None:
        save_tensors({self._key: data} if self._key else data, self._filepath)

    def _exists(self) -> bool:
        return self._filepath.is_file()

    def _describe(self) -> dict[str, Any]:
        return {"filepath": str(self._filepath), "key": self._key}


def _local_path(dataset) -> str | None:
    if dataset._protocol != "file":
        return None
    return str(PurePosixPath(dataset._get_save_path()))


class AtomicJSONDataset(JSONDataset):
    """kedro-datasets' JSONDataset, but a local save is temp-file-then-rename and strict JSON: a NaN or
    infinity (a diverged wave's perplexity) is written as null, never as a bare ``NaN``."""

    def save(self, data: Any) -> None:
        path = _local_path(self)
        if path is None:
            return super().save(strict_json(data))
        atomic_write_text(path, json.dumps(strict_json(data), **{**self._save_args, "allow_nan": False}))
        self._invalidate_cache()


class AtomicTextDataset(TextDataset):
    """kedro-datasets' TextDataset, but a local save is temp-file-then-rename."""

    def save(self, data: str) -> None:
        path = _local_path(self)
        if path is None:
            return super().save(data)
        atomic_write_text(path, data)
        self._invalidate_cache()


class WaveResumeDataset(AbstractDataset[dict, None]):
    """Read-only view of a finished wave, for resuming a killed run: ``None`` until the wave's state
    file exists (it is the last output a wave writes), then its state, record and checkpoint."""

    def __init__(self, state: str, record: str, checkpoint: str, metadata: dict[str, Any] | None = None):
        self._state, self._record, self._checkpoint = Path(state), Path(record), Path(checkpoint)
        self.metadata = metadata

    def load(self) -> dict | None:
        if not self._state.is_file():
            return None
        try:
            state = json.loads(self._state.read_text())
            record = json.loads(self._record.read_text())
        except (OSError, json.JSONDecodeError):
            return None  # an earlier format or a hand-edited file: the wave is simply run again
        problem = checkpoint_problem(self._checkpoint) if state.get("status") not in ("reverted", "skipped") else None
        if problem:
            log.warning("%s: the finished wave is computed again", problem)
            return None
        return {"state": state, "record": record, "checkpoint": self._load_checkpoint}

    def _load_checkpoint(self) -> Checkpoint:
        try:
            return load_checkpoint(self._checkpoint)
        except ArtifactError as exc:
            raise ArtifactError(
                f"{exc}. To compute this wave again, delete {self._state} and run the same command again"
            ) from exc

    def save(self, data) -> None:
        raise NotImplementedError("WaveResumeDataset is read-only; the wave's own outputs write these files")

    def _exists(self) -> bool:
        return True

    def _describe(self) -> dict[str, Any]:
        return {"state": str(self._state), "checkpoint": str(self._checkpoint)}
