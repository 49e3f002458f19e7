"""The NOVAQ file format: a directory holding ``manifest.json`` (format version, model config,
tokenizer files, each tensor's encoding and shapes, NOVAQ parameters, SHA-256 and size of every
file, verification logits, compression statistics), safetensors shards of packed indices,
float16 codebooks, means and scales (``shards/``), and the tokenizer (``tokenizer/``).
See docs/novaq-format.md. No pickle anywhere: JSON and safetensors only.

Writing is atomic (a temporary directory renamed into place) and ends by reading the new
directory back and recording the logits of that reconstructed model on fixed prompts, so any
reader can check it rebuilds the very model that was measured. Reading checks every path stays
inside the directory and every file's size and SHA-256 before parsing a byte of it.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import torch
from safetensors.torch import save as save_bytes
from torch import nn

from bird_bone.errors import ArtifactError
from bird_bone.io.atomic import atomic_directory, sha256_file
from bird_bone.quant.codebook import index_bits, pack_bits, unpack_bits
from bird_bone.quant.novaq import NovaqTensor

log = logging.getLogger(__name__)
FORMAT = "novaq"
FORMAT_VERSION = 2  # 2: codebook tiles of tile_rows x tile_cols weights (1: row groups only)
SUPPORTED_VERSIONS = (1, 2)
MANIFEST = "manifest.json"
NOVAQ_SHARD = "shards/novaq-00000.safetensors"
DENSE_SHARD = "shards/dense-00000.safetensors"
DEFAULT_PROMPTS = ("The capital of France is", "Bones grow where they are loaded and", "def add(a, b):")
VERIFY_TOP_K = 8
VERIFY_ATOL = 1e-2
_DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}


class NovaqFormatError(ArtifactError):
    """A NOVAQ file is missing, corrupt, inconsistent or unsafe (names the file or field at fault)."""


def encode_tensor(name: str, q: NovaqTensor) -> tuple[dict, dict[str, torch.Tensor]]:
    """Manifest entry and shard tensors of one quantized matrix."""
    b1, b2 = index_bits(q.primary.shape[1]), index_bits(q.residual.shape[1])
    all_rows = q.scales_every_row  # every row scaled: the row indices are implicit, none stored
    tensors = {
        f"{name}.codes1": pack_bits(q.codes1, b1),
        f"{name}.codes2": pack_bits(q.codes2, b2),
        f"{name}.primary": q.primary.detach().half(),
        f"{name}.residual": q.residual.detach().half(),
        f"{name}.mean": q.mean.detach().half(),
        f"{name}.outliers": (q.outliers[:0] if all_rows else q.outliers).to(torch.int32),
        f"{name}.outlier_scale": q.outlier_scale.detach().half(),
    }
    if q.column_scale is not None:
        tensors[f"{name}.column_scale"] = q.column_scale.half()
    entry = {
        "encoding": "novaq-rvq2",
        "shape": list(q.shape),
        "shard": NOVAQ_SHARD,
        "groups": q.primary.shape[0],
        "tile": list(q.tile),
        "vectors_per_group": q.codes1.shape[1],
        "subspaces": q.primary.shape[2],
        "codebook_shapes": [list(q.primary.shape), list(q.residual.shape)],
        "index_bits": [b1, b2],
        "normalization": {
            "outliers": q.outliers.numel(),
            "all_rows": all_rows,
            "mean_dtype": "float16",
            "scale_dtype": "float16",
        },
        "column_scale": q.column_scale is not None,
        "bits": q.bits(),
    }
    return entry, tensors


def decode_tensor(name: str, entry: dict, shard: dict[str, torch.Tensor]) -> torch.Tensor:
    """Dense float32 weight from its manifest entry and shard tensors."""
    try:
        rows, cols = entry["shape"]
        groups, n = entry["groups"], entry["vectors_per_group"]
        tile_rows, tile_cols = entry.get("tile") or (rows // max(groups, 1), cols)  # version 1: row groups
        b1, b2 = entry["index_bits"]
        primary, residual = shard[f"{name}.primary"].float(), shard[f"{name}.residual"].float()
        if groups * n * primary.shape[2] != rows * cols or primary.shape[0] != groups:
            raise NovaqFormatError(f"tensor {name}: shape {entry['shape']} disagrees with its codebooks")
        if (
            tile_rows < 1
            or tile_cols < 1
            or rows % tile_rows
            or cols % tile_cols
            or tile_rows * tile_cols != n * primary.shape[2]
        ):
            raise NovaqFormatError(f"tensor {name}: tile {[tile_rows, tile_cols]} does not tile shape {entry['shape']}")
        codes1 = unpack_bits(shard[f"{name}.codes1"], b1, groups * n).view(groups, n)
        codes2 = unpack_bits(shard[f"{name}.codes2"], b2, groups * n).view(groups, n)
        if int(codes1.max()) >= primary.shape[1] or int(codes2.max()) >= residual.shape[1]:
            raise NovaqFormatError(f"tensor {name}: an index points past its codebook")
        mean, outliers = shard[f"{name}.mean"].float(), shard[f"{name}.outliers"].long()
        if entry["normalization"].get("all_rows"):
            outliers = torch.arange(rows)
        column_scale = shard[f"{name}.column_scale"].float() if entry.get("column_scale") else None
        q = NovaqTensor(
            (rows, cols),
            primary,
            residual,
            codes1,
            codes2,
            mean,
            torch.ones(rows),
            outliers,
            None,
            column_scale,
            (tile_rows, tile_cols),
        )
        q.outlier_scale.data = shard[f"{name}.outlier_scale"].float()
        return q.decode().detach()
    except KeyError as exc:
        raise NovaqFormatError(f"tensor {name}: missing field or shard entry {exc}") from None
    except (ValueError, RuntimeError, IndexError) as exc:
        raise NovaqFormatError(f"tensor {name}: inconsistent data ({exc})") from None


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
            name: p.detach().to(_DTYPES[dense_dtype]).contiguous()
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
        from bird_bone.export.novaq_read import build_model

        rebuilt = build_model(tmp, manifest)
        manifest["verification"] = reference_logits(rebuilt, tokenizer, prompts)
        manifest["statistics"] = {**(statistics or {}), **file_statistics(tmp, manifest, rebuilt)}
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


@torch.inference_mode()
def reference_logits(model: nn.Module, tokenizer, prompts=DEFAULT_PROMPTS) -> dict:
    """Top-k logits (values and token ids) and logsumexp at every position of each prompt."""
    records = []
    for prompt in prompts:
        if tokenizer is not None:
            ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        else:
            ids = [ord(c) % model.config.vocab_size for c in prompt]
        logits = model(input_ids=torch.tensor([ids]), use_cache=False).logits[0].float()
        top = logits.topk(min(VERIFY_TOP_K, logits.shape[-1]), dim=-1)
        records.append({
            "prompt": prompt, "input_ids": ids, "top_ids": top.indices.tolist(),
            "top_logits": top.values.tolist(), "logsumexp": torch.logsumexp(logits, -1).tolist(),
        })  # fmt: skip
    return {"prompts": records, "atol": VERIFY_ATOL}
