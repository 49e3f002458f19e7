"""A Hugging Face sharded safetensors checkpoint written one shard at a time.

Each shard appears atomically under its final name (``bird_bone.io.atomic``); the index
``model.safetensors.index.json`` is written last, from the shards' own headers, so a directory
with an index is complete and ``AutoModelForCausalLM.from_pretrained`` loads it. The source's
other files (config, generation config, tokenizer) are copied beside the shards.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from bird_bone.io.atomic import atomic_path, atomic_write_text

INDEX = "model.safetensors.index.json"


class ShardWriter:
    """Shards ``model-0000i-of-0000n.safetensors`` of a checkpoint in ``directory``."""

    def __init__(self, directory: str | Path, count: int):
        self.directory = Path(directory)
        self.count = count

    def name(self, position: int) -> str:
        return f"model-{position + 1:05d}-of-{self.count:05d}.safetensors"

    def write(self, position: int, tensors: dict[str, torch.Tensor]) -> Path:
        """Write shard ``position`` (0-based) atomically."""
        target = self.directory / self.name(position)
        with atomic_path(target) as tmp:
            save_file({k: t.contiguous() for k, t in tensors.items()}, str(tmp), metadata={"format": "pt"})
        return target

    def finish(self, source: Path, extra: dict[str, str] | None = None) -> Path:
        """Copy ``source``'s non-weight files, write the ``extra`` files (name -> text, e.g. a
        ``bird_bone.json`` recording new MLP widths; they replace copied ones), then the index over
        every shard (last)."""
        for path in sorted(source.iterdir()):
            if path.is_file() and not path.name.endswith(".safetensors") and path.name != INDEX:
                with atomic_path(self.directory / path.name) as tmp:
                    shutil.copyfile(path, tmp)
        for name, text in (extra or {}).items():
            atomic_write_text(self.directory / name, text)
        mapping: dict[str, str] = {}
        total = 0
        for position in range(self.count):
            with safe_open(self.directory / self.name(position), "pt") as handle:
                for key in handle.keys():
                    mapping[key] = self.name(position)
                    piece = handle.get_slice(key)
                    total += _nbytes(piece.get_shape(), piece.get_dtype())
        index = {"metadata": {"total_size": total}, "weight_map": dict(sorted(mapping.items()))}
        atomic_write_text(self.directory / INDEX, json.dumps(index, indent=2) + "\n")
        return self.directory / INDEX


_ITEM_BYTES = {"BOOL": 1, "U8": 1, "I8": 1, "F8_E4M3": 1, "F8_E5M2": 1, "I16": 2, "F16": 2, "BF16": 2}


def _nbytes(shape: list[int], dtype: str) -> int:
    count = 1
    for size in shape:
        count *= size
    return count * _ITEM_BYTES.get(dtype, 8 if dtype.endswith("64") else 4)
