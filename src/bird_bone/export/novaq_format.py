"""Writing the NOVAQ file format: a directory holding ``manifest.json`` (format version, model
config, tokenizer files, each tensor's encoding and shapes, NOVAQ parameters, SHA-256 and size of
every file, verification logits, compression statistics, and the manifest's own seal), safetensors
shards of packed indices, float16 codebooks, means and scales (``shards/``), and the tokenizer
(``tokenizer/``). See docs/novaq-format.md. No pickle anywhere: JSON and safetensors only.

Writing is atomic (a temporary directory renamed into place) and ends by reading the new
directory back and recording the logits of that reconstructed model on fixed prompts, so any
reader can check it rebuilds the very model that was measured. The schema is ``novaq_schema``, one
tensor's encoding ``novaq_codec``, reading and validation ``novaq_read``; the names below are
re-exported for the writer's callers.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from safetensors.torch import save as save_bytes
from torch import nn

from bird_bone.export.novaq_codec import DTYPES, encode_tensor
from bird_bone.export.novaq_read import DEFAULT_PROMPTS, build_model, reference_logits
from bird_bone.export.novaq_schema import (
    DENSE_SHARD,
    FORMAT,
    FORMAT_VERSION,
    MANIFEST,
    NOVAQ_SHARD,
    NovaqFormatError,
    seal,
)
from bird_bone.io.atomic import atomic_directory, sha256_file
from bird_bone.quant.tensor import NovaqTensor

log = logging.getLogger(__name__)
__all__ = ["DENSE_SHARD", "FORMAT_VERSION", "MANIFEST", "NOVAQ_SHARD", "NovaqFormatError", "write_novaq"]


def _write_tokenizer(tokenizer, tmp: Path) -> None:
    if tokenizer is not None:
        tokenizer.save_pretrained(tmp / "tokenizer")


def write_novaq(
    path: str | Path,
    model: nn.Module,
    tokenizer,
    quantized: dict[str, NovaqTensor],
    novaq_parameters: dict,
    statistics: dict | None = None,
    extra: dict | None = None,
    dense_dtype: str = "float16",
    prompts: tuple[str, ...] = DEFAULT_PROMPTS,
) -> dict:
    """Write the NOVAQ directory ``path`` atomically; returns its manifest."""
    path = Path(path)
    with atomic_directory(path) as tmp:
        (tmp / "shards").mkdir()
        entries, q_tensors = {}, {}
        for name, q in quantized.items():
            entries[name], tensors = encode_tensor(name, q)
            q_tensors.update(tensors)
        dense = {
            name: p.detach().to(DTYPES[dense_dtype]).contiguous()
            for name, p in model.named_parameters()
            if name not in quantized
        }
        for name, tensor in dense.items():
            entries[name] = {
                "encoding": "dense",
                "shape": list(tensor.shape),
                "dtype": dense_dtype,
                "shard": DENSE_SHARD,
            }
        (tmp / NOVAQ_SHARD).write_bytes(save_bytes(q_tensors) if q_tensors else save_bytes({}))
        (tmp / DENSE_SHARD).write_bytes(save_bytes(dense))
        _write_tokenizer(tokenizer, tmp)
        manifest = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "model": {"config": model.config.to_dict(), "class": type(model).__name__},
            "tokenizer": "tokenizer" if tokenizer is not None else None,
            "novaq": novaq_parameters,
            "tensors": entries,
            "files": _file_table(tmp),
            "extra": extra or {},
        }
        rebuilt = build_model(tmp, seal(manifest))
        manifest["verification"] = reference_logits(rebuilt, tokenizer, prompts)
        manifest["statistics"] = {**(statistics or {}), **file_statistics(tmp, manifest, rebuilt)}
        manifest = seal(manifest)
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1, sort_keys=True))
    log.info("NOVAQ file written: %s", path)
    return manifest


def _file_table(root: Path) -> dict[str, dict]:
    return {
        p.relative_to(root).as_posix(): {"sha256": sha256_file(p), "bytes": p.stat().st_size}
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.name != MANIFEST
    }


def file_statistics(root: Path, manifest: dict, model: nn.Module) -> dict:
    """Bytes on disk and bits per weight measured from the files themselves."""
    weights = sum(p.numel() for p in model.parameters())
    shard_bytes = sum(f["bytes"] for name, f in manifest["files"].items() if name.startswith("shards/"))
    all_bytes = sum(f["bytes"] for f in manifest["files"].values())
    return {
        "file_weights": weights,
        "shard_bytes": shard_bytes,
        "file_bytes_without_manifest": all_bytes,
        "shard_bits_per_weight": 8 * shard_bytes / weights,
        "fp16_bytes": 2 * weights,
        "compression_vs_fp16_on_disk": 2 * weights / shard_bytes,
    }
