"""Kedro dataset for a GGUF file. The export node writes (and quantizes) the file in a staging
directory, since llama.cpp's quantizer works file to file; saving moves it into place atomically
and keeps the node's summary, so a later node of the same run reads it without describing the
file again. Loading in a fresh run describes the file on disk (type, size, bits per weight)."""

from __future__ import annotations

import dataclasses
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kedro.io import AbstractDataset

from bird_bone.export.gguf import GGUFExport, describe_gguf
from bird_bone.io.atomic import atomic_path


@dataclass
class StagedGGUF:
    """A GGUF file written outside the catalog (``staged``) and what the writer said about it."""

    staged: Path
    summary: GGUFExport


class GGUFDataset(AbstractDataset[StagedGGUF, GGUFExport]):
    """One GGUF file (e.g. ``models/export.gguf``)."""

    def __init__(self, filepath: str, metadata: dict[str, Any] | None = None):
        self._filepath = Path(filepath)
        self._saved: GGUFExport | None = None
        self.metadata = metadata

    def load(self) -> GGUFExport:
        return self._saved if self._saved is not None else describe_gguf(self._filepath)

    def save(self, data: StagedGGUF) -> None:
        with atomic_path(self._filepath) as tmp:
            shutil.move(data.staged, tmp)
        shutil.rmtree(data.staged.parent, ignore_errors=True)
        self._saved = dataclasses.replace(data.summary, path=str(self._filepath))

    def _exists(self) -> bool:
        return self._filepath.is_file()

    def _describe(self) -> dict[str, Any]:
        return {"filepath": str(self._filepath)}
