"""One NOVAQ tensor to and from its manifest entry and shard tensors (format: docs/novaq-format.md).

:func:`check_entry` compares a validated entry (``novaq_schema``) with the tensors its shard really
holds (shape, dtype, index ranges) before :func:`decode_tensor` allocates anything from the
entry's numbers, so a manifest cannot make the reader allocate more than its shards imply.
"""

from __future__ import annotations

import math

import torch

from bird_bone.export.novaq_schema import NOVAQ_SHARD, DenseEntry, NovaqFormatError, RvqEntry
from bird_bone.quant.codebook import index_bits, pack_bits, unpack_bits
from bird_bone.quant.tensor import NovaqTensor

DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}


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


def _expect(shard: dict[str, torch.Tensor], key: str, shape: list[int], tensor: str) -> torch.Tensor:
    if key not in shard:
        raise NovaqFormatError(f"tensor {tensor}: shard entry {key} is missing")
    if list(shard[key].shape) != list(shape):
        raise NovaqFormatError(f"tensor {tensor}: shard entry {key} has shape {list(shard[key].shape)}, not {shape}")
    return shard[key]


def check_entry(name: str, entry: DenseEntry | RvqEntry, shard: dict[str, torch.Tensor]) -> None:
    """The shard holds what ``entry`` describes, with the shapes it implies."""
    if isinstance(entry, DenseEntry):
        tensor = _expect(shard, name, entry.shape, name)
        if tensor.dtype != DTYPES[entry.dtype]:
            raise NovaqFormatError(f"tensor {name}: stored as {tensor.dtype}, manifest says {entry.dtype}")
        return
    (rows, cols), (b1, b2) = entry.shape, entry.index_bits
    count = entry.groups * entry.vectors_per_group
    _expect(shard, f"{name}.primary", list(entry.codebook_shapes[0]), name)
    _expect(shard, f"{name}.residual", list(entry.codebook_shapes[1]), name)
    _expect(shard, f"{name}.codes1", [math.ceil(count * b1 / 8)], name)
    _expect(shard, f"{name}.codes2", [math.ceil(count * b2 / 8)], name)
    _expect(shard, f"{name}.mean", [rows], name)
    scaled = rows if entry.normalization.all_rows else entry.normalization.outliers
    outliers = _expect(shard, f"{name}.outliers", [0 if entry.normalization.all_rows else scaled], name)
    _expect(shard, f"{name}.outlier_scale", [scaled], name)
    if outliers.numel() and (int(outliers.min()) < 0 or int(outliers.max()) >= rows):
        raise NovaqFormatError(f"tensor {name}: an outlier row index is outside 0..{rows - 1}")
    if entry.column_scale:
        _expect(shard, f"{name}.column_scale", [cols], name)
    for key in ("primary", "residual", "mean", "outlier_scale"):
        if not shard[f"{name}.{key}"].dtype.is_floating_point:
            raise NovaqFormatError(f"tensor {name}: shard entry {name}.{key} is not floating point")


def decode_tensor(name: str, entry: RvqEntry, shard: dict[str, torch.Tensor]) -> torch.Tensor:
    """Dense float32 weight from its (checked, :func:`check_entry`) manifest entry and shard tensors."""
    check_entry(name, entry, shard)
    (rows, cols), (b1, b2) = entry.shape, entry.index_bits
    groups, n = entry.groups, entry.vectors_per_group
    primary, residual = shard[f"{name}.primary"].float(), shard[f"{name}.residual"].float()
    try:
        codes1 = unpack_bits(shard[f"{name}.codes1"], b1, groups * n).view(groups, n)
        codes2 = unpack_bits(shard[f"{name}.codes2"], b2, groups * n).view(groups, n)
    except (ValueError, RuntimeError) as exc:
        raise NovaqFormatError(f"tensor {name}: inconsistent indices ({exc})") from None
    if int(codes1.max()) >= primary.shape[1] or int(codes2.max()) >= residual.shape[1]:
        raise NovaqFormatError(f"tensor {name}: an index points past its codebook")
    outliers = torch.arange(rows) if entry.normalization.all_rows else shard[f"{name}.outliers"].long()
    column_scale = shard[f"{name}.column_scale"].float() if entry.column_scale else None
    mean = shard[f"{name}.mean"].float()
    q = NovaqTensor((rows, cols), primary, residual, codes1, codes2, mean, torch.ones(rows), outliers,
                    column_scale, entry.tile_shape)  # fmt: skip
    q.outlier_scale.data = shard[f"{name}.outlier_scale"].float()
    weight = q.decode().detach()
    if not torch.isfinite(weight).all():
        raise NovaqFormatError(f"tensor {name}: decodes to non-finite weights")
    return weight
