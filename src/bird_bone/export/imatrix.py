"""Importance matrices for llama.cpp's quantizer, built from bird-bone's activation statistics.

llama.cpp's ``llama-imatrix`` stores, per weight matrix, the sum over calibration tokens of x_j^2 for
every input column j (``<tensor>.in_sum2``) and the token count (``<tensor>.counts``); the quantizer
weighs each column's rounding error by in_sum2 / counts. bird-bone's activation logging stores the same
sums per linear (``<module>.input_sq_norms``), so the matrix is a renaming, not a new calibration run.
The file is the GGUF imatrix format the bundled llama.cpp reads and writes (``general.type = imatrix``,
``imatrix.datasets``, ``imatrix.chunk_count``, ``imatrix.chunk_size``; tools/imatrix and
common/imatrix-loader.cpp), written with the gguf package so ``llama-quantize --imatrix`` takes it too.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from bird_bone.errors import ArtifactError
from bird_bone.io.atomic import atomic_path

log = logging.getLogger(__name__)
SQ_NORMS = ".input_sq_norms"


@dataclass
class ImatrixEntry:
    sums: np.ndarray  # [columns] float32: sum over tokens of x_j^2
    count: float  # tokens the sums ran over

    @property
    def mean(self) -> np.ndarray:
        """E[x_j^2]: what the quantizer weighs each column by."""
        return (self.sums / max(self.count, 1.0)).astype(np.float32)


def importance_matrix(
    statistics: dict[str, torch.Tensor], model: nn.Module, tokens: int | None = None
) -> dict[str, ImatrixEntry]:
    """GGUF tensor name -> entry, from ``<module>.input_sq_norms`` statistics of ``model``'s linears.

    ``tokens``: calibration tokens the statistics ran over (None: 1; llama.cpp's K- and I-quant
    solvers weigh a row's errors relative to each other, so one scale per tensor does not change the
    result, but a file for other tools should carry the true count). Statistics whose column count no
    longer matches the model (a structurally pruned MLP) are left out with a warning.
    """
    import gguf

    layers = model.config.num_hidden_layers
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, layers)
    linears = {name: m for name, m in model.named_modules() if isinstance(m, nn.Linear)}
    entries, stale = {}, []
    for key, sums in statistics.items():
        if not key.endswith(SQ_NORMS):
            continue
        module = key[: -len(SQ_NORMS)]
        target = names.get_name(f"{module}.weight", try_suffixes=(".weight",))
        if target is None or module not in linears:
            raise ArtifactError(f"activation statistic {key} names no linear layer of the model")
        if sums.numel() != linears[module].in_features or not torch.isfinite(sums).all():
            stale.append(key)
            continue
        entries[target] = ImatrixEntry(sums.detach().float().cpu().numpy(), float(tokens or 1))
    if stale:
        log.warning("%d activation statistics left out of the importance matrix (size or values): %s", len(stale),
                    stale[:3])  # fmt: skip
    if not entries:
        raise ArtifactError(f"no '*{SQ_NORMS}' activation statistic matches the model: no importance matrix")
    return entries


def write_imatrix(
    path: str | Path, entries: dict[str, ImatrixEntry], chunk_size: int, datasets: list[str] | None = None
) -> Path:
    """Write ``entries`` as a GGUF imatrix file (atomically); returns ``path``."""
    import gguf

    count = max(e.count for e in entries.values())
    with atomic_path(path) as tmp:
        writer = gguf.GGUFWriter(tmp, arch="imatrix")  # the loader reads only imatrix.* keys and tensors
        writer.add_type(gguf.GGUFType.IMATRIX)
        writer.add_array(gguf.Keys.IMatrix.DATASETS, datasets or ["bird-bone activation statistics"])
        writer.add_uint32(gguf.Keys.IMatrix.CHUNK_COUNT, math.ceil(count / chunk_size))
        writer.add_uint32(gguf.Keys.IMatrix.CHUNK_SIZE, chunk_size)
        for name in sorted(entries):
            writer.add_tensor(f"{name}.in_sum2", entries[name].sums.astype(np.float32).reshape(1, -1))
            writer.add_tensor(f"{name}.counts", np.array([[entries[name].count]], dtype=np.float32))
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
    return Path(path)


def read_imatrix(path: str | Path) -> dict[str, ImatrixEntry]:
    """Read a GGUF imatrix file (ours or llama-imatrix's)."""
    import gguf

    try:
        reader = gguf.GGUFReader(path)
    except (OSError, ValueError) as exc:
        raise ArtifactError(f"{path} is not a GGUF imatrix file: {exc}") from exc
    tensors = {t.name: np.array(t.data, dtype=np.float32).reshape(-1) for t in reader.tensors}
    entries = {}
    for name, sums in tensors.items():
        if name.endswith(".in_sum2"):
            base = name[: -len(".in_sum2")]
            if f"{base}.counts" not in tensors:
                raise ArtifactError(f"{path}: {base}.in_sum2 has no {base}.counts")
            entries[base] = ImatrixEntry(sums, float(tensors[f"{base}.counts"][0]))
    if not entries:
        raise ArtifactError(f"{path} holds no '<tensor>.in_sum2' entries")
    return entries
