"""Checks on model inputs before their weights are used: a damaged GGUF is refused, never turned
into a model of garbage weights.

Three checks, each naming the file and tensor at fault:
- the GGUF's tensor table against its bytes (gguf's reader parses the header but does not check that
  each tensor's type, element count, byte size and offset agree with each other and with the file);
- a published checksum, where the source has one: a model embedded in an installed wheel is listed with
  its SHA-256 in the wheel's ``RECORD`` (this is what catches a changed byte inside quantized data);
- every loaded weight finite, after transformers has dequantized it (a damaged scale decodes to NaN).
"""

from __future__ import annotations

import base64
import importlib.metadata
from pathlib import Path

import torch
from torch import nn

from bird_bone.errors import BirdBoneError, ModelLoadError

_RECOVER = "the file is damaged: download or export it again"


def check_gguf_tensors(path: Path) -> None:
    """The file parses, each tensor's type is known and its element count fills whole blocks, and the
    tensors' data lie back to back (aligned) up to the end of the file, as every GGUF writer lays them
    out: a changed type or offset leaves a gap or an overlap, a cut file a tensor past the end."""
    import gguf

    try:
        reader = gguf.GGUFReader(path)
    except Exception as exc:  # gguf raises ValueError/IndexError/struct errors on bad bytes
        raise ModelLoadError(f"{path} is a truncated or corrupt GGUF file: {exc}") from exc
    size = path.stat().st_size
    alignment = getattr(reader, "alignment", 32) or 32
    end, before = None, None
    for tensor in sorted(reader.tensors, key=lambda t: int(t.data_offset)):
        where = f"{path}: tensor '{tensor.name}'"
        try:
            kind = gguf.GGMLQuantizationType(int(tensor.tensor_type))
            block, block_bytes = gguf.GGML_QUANT_SIZES[kind]
        except (ValueError, KeyError) as exc:
            raise ModelLoadError(f"{where} has unknown type {int(tensor.tensor_type)}; {_RECOVER}") from exc
        elements, offset, n_bytes = int(tensor.n_elements), int(tensor.data_offset), int(tensor.n_bytes)
        if elements <= 0 or elements % block:
            raise ModelLoadError(f"{where}: {elements} elements do not fill {kind.name} blocks of {block}; {_RECOVER}")
        if n_bytes != elements // block * block_bytes:
            raise ModelLoadError(f"{where}: {n_bytes} bytes do not match {elements} {kind.name} elements; {_RECOVER}")
        expected = offset if end is None else -(-end // alignment) * alignment
        if offset != expected:
            raise ModelLoadError(
                f"{path}: tensor '{before}' ends at byte {end} but tensor '{tensor.name}' starts at {offset}: "
                f"the type, shape or offset of one of them was changed; {_RECOVER}"
            )
        if offset + n_bytes > size:
            raise ModelLoadError(f"{where}: {n_bytes} bytes at {offset} run past the end ({size} bytes); {_RECOVER}")
        end, before = offset + n_bytes, tensor.name
    if end is not None and size - end >= alignment:
        raise ModelLoadError(
            f"{path}: {size - end} bytes after the data of the last tensor, '{before}': its type or shape was "
            f"changed; {_RECOVER}"
        )


def check_package_record(path: Path, sha256: str) -> None:
    """Compare ``path``'s SHA-256 with the one its installed wheel's RECORD lists (if any)."""
    path = path.resolve()
    for dist in importlib.metadata.distributions():
        for entry in dist.files or ():
            if entry.hash is None or entry.name != path.name or Path(dist.locate_file(entry)).resolve() != path:
                continue
            if entry.hash.mode != "sha256":
                return
            published = base64.urlsafe_b64decode(entry.hash.value + "=" * (-len(entry.hash.value) % 4)).hex()
            if published != sha256:
                raise ModelLoadError(
                    f"{path} does not match the SHA-256 its package {dist.metadata['Name']} "
                    f"{dist.version} published (got {sha256[:16]}..., expected {published[:16]}...): the "
                    f"file is damaged; reinstall it: pip install --force-reinstall --no-deps "
                    f"{dist.metadata['Name']}=={dist.version}"
                )
            return


@torch.no_grad()
def check_finite(
    model: nn.Module, source: str | Path, error: type[BirdBoneError] = ModelLoadError, advice: str = _RECOVER
) -> None:
    """Fail with ``error`` on the first parameter or buffer of ``model`` holding a NaN or an infinity."""
    for name, tensor in [*model.named_parameters(), *model.named_buffers()]:
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            bad = int((~torch.isfinite(tensor)).sum())
            total = tensor.numel()
            raise error(f"{source}: tensor '{name}' holds {bad} of {total} values non-finite (NaN or inf); {advice}")
