"""The NOVAQ manifest schema: names, version, and one pydantic model of ``manifest.json``.

Every field a reader uses is typed and bounded here, and the relations inside one tensor entry
(codebook shapes against the matrix shape, tiles, index bits) are checked, before any shard is
opened: :func:`parse_manifest` turns any malformed manifest into one :class:`NovaqFormatError` line
naming the field. Shapes against the shard data are checked by ``novaq_codec.check_entry``.

Version 3 seals the manifest: ``manifest_sha256`` is the SHA-256 of the canonical JSON of every
other field, so an edited manifest (its model config, its recorded logits) fails like an edited
shard. The verification tolerance is the reader's (:data:`VERIFY_ATOL`), never the file's.
"""

from __future__ import annotations

import hashlib
import json
import math
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from bird_bone.errors import ArtifactError

FORMAT = "novaq"
FORMAT_VERSION = 3  # 3: sealed manifest (manifest_sha256); 2: tiles of tile_rows x tile_cols; 1: row groups
SUPPORTED_VERSIONS = (1, 2, 3)
MANIFEST = "manifest.json"
NOVAQ_SHARD = "shards/novaq-00000.safetensors"
DENSE_SHARD = "shards/dense-00000.safetensors"
VERIFY_TOP_K = 8
VERIFY_ATOL = 1e-2  # largest logit difference validate accepts (the reader's, not the file's)
DIGEST_FIELD = "manifest_sha256"
MAX_DIM = 1 << 40

Dim = Annotated[int, Field(ge=1, le=MAX_DIM)]
Count = Annotated[int, Field(ge=0, le=MAX_DIM)]
Bits = Annotated[int, Field(ge=0, le=16)]
Name = Annotated[str, Field(min_length=1, max_length=4096)]


class NovaqFormatError(ArtifactError):
    """A NOVAQ file is missing, corrupt, inconsistent or unsafe (names the file or field at fault)."""


class _Strict(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)


class FileRecord(_Strict):
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    bytes: Count


class Normalization(_Strict):
    outliers: Count
    all_rows: bool = False
    mean_dtype: Literal["float16"] = "float16"
    scale_dtype: Literal["float16"] = "float16"


class DenseEntry(_Strict):
    encoding: Literal["dense"]
    shape: list[Dim] = Field(max_length=8)
    dtype: Literal["float16", "bfloat16", "float32"]
    shard: Name


class RvqEntry(_Strict):
    encoding: Literal["novaq-rvq2"]
    shape: tuple[Dim, Dim]
    shard: Name
    groups: Dim
    tile: tuple[Dim, Dim] | None = None  # version 1: row groups, tile = (rows / groups, cols)
    vectors_per_group: Dim
    subspaces: Annotated[int, Field(ge=1, le=64)]
    codebook_shapes: tuple[tuple[Dim, Dim, Dim], tuple[Dim, Dim, Dim]]
    index_bits: tuple[Bits, Bits]
    normalization: Normalization
    column_scale: bool = False
    bits: dict[str, Count] = Field(default_factory=dict)

    @property
    def tile_shape(self) -> tuple[int, int]:
        rows, cols = self.shape
        return self.tile or (rows // self.groups, cols)

    @model_validator(mode="after")
    def _consistent(self) -> RvqEntry:
        (rows, cols), (tr, tc) = self.shape, self.tile_shape
        (g1, k1, d1), (g2, k2, d2) = self.codebook_shapes
        if (g1, g2, d1, d2) != (self.groups, self.groups, self.subspaces, self.subspaces):
            raise ValueError(f"codebook_shapes {self.codebook_shapes} disagree with groups and subspaces")
        if k1 < 2 or list(self.index_bits) != [_bits(k1), _bits(k2)]:
            raise ValueError(f"index_bits {list(self.index_bits)} do not fit codebooks of {k1} and {k2} entries")
        if tr < 1 or rows % tr or cols % tc or (rows // tr) * (cols // tc) != self.groups:
            raise ValueError(f"tile {[tr, tc]} does not tile shape {list(self.shape)} into {self.groups} groups")
        if tr * tc != self.vectors_per_group * self.subspaces:
            raise ValueError(f"tile {[tr, tc]} does not hold {self.vectors_per_group} vectors of {self.subspaces}")
        if self.normalization.outliers > rows:
            raise ValueError(f"{self.normalization.outliers} outlier rows in a matrix of {rows} rows")
        return self


TensorEntry = Annotated[DenseEntry | RvqEntry, Field(discriminator="encoding")]


class PromptRecord(_Strict):
    prompt: str
    input_ids: list[Count] = Field(min_length=1, max_length=4096)
    top_ids: list[list[Count]]
    top_logits: list[list[float]]
    logsumexp: list[float]

    @model_validator(mode="after")
    def _consistent(self) -> PromptRecord:
        n = len(self.input_ids)
        if not (len(self.top_ids) == len(self.top_logits) == len(self.logsumexp) == n):
            raise ValueError(f"top_ids, top_logits and logsumexp need one row per input id ({n})")
        widths = {len(r) for r in self.top_ids} | {len(r) for r in self.top_logits}
        if len(widths) != 1 or 0 in widths:
            raise ValueError("top_ids and top_logits rows must all have the same, non-zero length")
        return self


class Verification(_Strict):
    prompts: list[PromptRecord] = Field(min_length=1, max_length=64)
    atol: float | None = None  # versions 1-2 recorded one; the reader ignores it (VERIFY_ATOL)


class ModelSection(_Strict):
    config: dict[str, Any]
    class_name: str = Field(alias="class")

    @model_validator(mode="after")
    def _has_type(self) -> ModelSection:
        if not isinstance(self.config.get("model_type"), str):
            raise ValueError("model.config.model_type must be a string")
        return self


class Manifest(_Strict):
    format: Literal["novaq"]
    format_version: Literal[1, 2, 3]
    model: ModelSection
    tokenizer: Name | None = None
    novaq: dict[str, Any] | None = None
    tensors: dict[Name, TensorEntry] = Field(min_length=1)
    files: dict[Name, FileRecord]
    extra: dict[str, Any] = Field(default_factory=dict)
    verification: Verification | None = None
    statistics: dict[str, Any] = Field(default_factory=dict)
    manifest_sha256: str | None = Field(None, pattern=r"^[0-9a-f]{64}$")

    @model_validator(mode="after")
    def _shards_listed(self) -> Manifest:
        for name, entry in self.tensors.items():
            if entry.shard not in self.files:
                raise ValueError(f"tensor {name} names shard {entry.shard!r} that is not in 'files'")
        if self.format_version >= 3 and self.manifest_sha256 is None:
            raise ValueError(f"format_version {self.format_version} needs '{DIGEST_FIELD}'")
        return self


def _bits(k: int) -> int:
    return math.ceil(math.log2(k)) if k > 1 else 0


def manifest_digest(manifest: dict) -> str:
    """SHA-256 of the canonical JSON of every field but the digest itself."""
    body = {k: v for k, v in manifest.items() if k != DIGEST_FIELD}
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def seal(manifest: dict) -> dict:
    """``manifest`` as JSON reads it back (string keys, lists), with its digest recorded."""
    manifest = json.loads(json.dumps(manifest))
    return {**manifest, DIGEST_FIELD: manifest_digest(manifest)}


def parse_manifest(text: str, where: str) -> tuple[dict, Manifest]:
    """(raw dict, validated model) of a manifest's JSON text; a digest that does not match fails."""
    try:
        raw = json.loads(text)
    except (json.JSONDecodeError, RecursionError) as exc:
        raise NovaqFormatError(f"{where} is not valid JSON: {exc}") from None
    if not isinstance(raw, dict):
        raise NovaqFormatError(f"{where}: the manifest must be a JSON object")
    if raw.get("format") != FORMAT:
        raise NovaqFormatError(f"{where}: field 'format' must be '{FORMAT}'")
    if raw.get("format_version") not in SUPPORTED_VERSIONS or isinstance(raw.get("format_version"), bool):
        raise NovaqFormatError(
            f"{where}: format_version {raw.get('format_version')!r} is not supported "
            f"(this reader handles {', '.join(map(str, SUPPORTED_VERSIONS))})"
        )
    try:
        model = Manifest.model_validate_json(text)
    except ValidationError as exc:
        err = exc.errors()[0]
        field = ".".join(map(str, err["loc"])) or "manifest"
        more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
        message = err["msg"].removeprefix("Value error, ")
        raise NovaqFormatError(f"{where}: field {field}: {message}{more}") from None
    if model.manifest_sha256 is not None and manifest_digest(raw) != model.manifest_sha256:
        raise NovaqFormatError(f"{where}: {DIGEST_FIELD} mismatch (the manifest was edited or is corrupt)")
    return raw, model
