"""Kedro dataset for a NOVAQ directory: saving writes it atomically with the verification logits
(bird_bone.export.novaq_format); loading checks every hash and rebuilds the dequantized model."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kedro.io import AbstractDataset

from bird_bone.export.novaq_format import MANIFEST, write_novaq
from bird_bone.export.novaq_read import read_novaq


@dataclass
class NovaqArtifact:
    """A model with its NOVAQ tensors (to save), or a model read back from a NOVAQ directory."""

    model: Any
    tokenizer: Any
    quantized: dict = field(default_factory=dict)
    parameters: dict = field(default_factory=dict)
    statistics: dict = field(default_factory=dict)
    extra: dict = field(default_factory=dict)
    manifest: dict = field(default_factory=dict)
    dense_dtype: str = "float16"  # storage of the tensors NOVAQ leaves dense (novaq.dense_dtype)


class NovaqDataset(AbstractDataset[NovaqArtifact, NovaqArtifact]):
    """A NOVAQ directory (manifest.json, shards/, tokenizer/)."""

    def __init__(self, path: str, metadata: dict[str, Any] | None = None):
        self._path = Path(path)
        self.metadata = metadata

    def load(self) -> NovaqArtifact:
        model, tokenizer, manifest = read_novaq(self._path)
        return NovaqArtifact(model, tokenizer, manifest=manifest, statistics=manifest.get("statistics", {}))

    def save(self, data: NovaqArtifact) -> None:
        write_novaq(self._path, data.model, data.tokenizer, data.quantized, data.parameters, data.statistics,
                    data.extra, data.dense_dtype)  # fmt: skip

    def _exists(self) -> bool:
        return (self._path / MANIFEST).is_file()

    def _describe(self) -> dict[str, Any]:
        return {"path": str(self._path)}
