"""Kedro dataset for a GGUF file: saving writes it (atomically) through bird_bone.export, loading
describes the file on disk (type, size, bits per weight)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kedro.io import AbstractDataset

from bird_bone.export.gguf import GGUFExport, describe_gguf
from bird_bone.export.imatrix import ImatrixEntry
from bird_bone.export.llamacpp_quantize import export_gguf


@dataclass
class GGUFArtifact:
    """A model to write as GGUF, with the export type and the importance matrix to quantize with."""

    model: Any
    tokenizer: Any
    type: str
    imatrix: dict[str, ImatrixEntry] | None = None
    metadata: dict = field(default_factory=dict)
    name: str | None = None
    pre_tokenizer: str | None = None
    threads: int = 0


class GGUFDataset(AbstractDataset[GGUFArtifact, GGUFExport]):
    """One GGUF file (e.g. ``models/export.gguf``)."""

    def __init__(self, filepath: str, metadata: dict[str, Any] | None = None):
        self._filepath = Path(filepath)
        self.metadata = metadata

    def load(self) -> GGUFExport:
        return describe_gguf(self._filepath)

    def save(self, data: GGUFArtifact) -> None:
        export_gguf(data.model, data.tokenizer, self._filepath, data.type, data.imatrix, data.metadata,
                    data.pre_tokenizer, data.threads, data.name)  # fmt: skip

    def _exists(self) -> bool:
        return self._filepath.is_file()

    def _describe(self) -> dict[str, Any]:
        return {"filepath": str(self._filepath)}
