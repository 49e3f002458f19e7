"""K- and I-quant GGUF files through llama.cpp's own quantizer (``llama_model_quantize`` in
llama-cpp-python), fed an importance matrix.

The quantizer reads an F32 GGUF written by ``bird_bone.export.gguf.write_gguf`` and picks each tensor's
type by llama.cpp's rules for the file type (Q4_K_M: most matrices Q4_K, some Q6_K; a matrix whose
rows do not split into 256-wide super-blocks falls back to a 32-wide type, e.g. Q4_K -> Q5_0). The
importance matrix goes in through ``llama_model_quantize_params.imatrix``, a null-terminated array of
``llama_model_imatrix_data`` (name, E[x_j^2] values, size), in the form llama-quantize hands it over
after reading an imatrix file.
"""

from __future__ import annotations

import ctypes
import logging
import tempfile
from pathlib import Path

import numpy as np
from torch import nn

from bird_bone.errors import ArtifactError
from bird_bone.export.gguf import LLAMA_CPP_TYPES, GGUFExport, check_type, describe_gguf, write_gguf
from bird_bone.export.imatrix import ImatrixEntry
from bird_bone.io.atomic import atomic_path

log = logging.getLogger(__name__)
NEEDS_IMATRIX = ("IQ2_XXS",)  # llama.cpp refuses these without one
PEER_TYPES = ("Q8_0", "Q6_K", "Q5_K_M")  # llama.cpp file types benchmarks/pareto.py compares with, not export types


def _ftype(type: str) -> int:
    import llama_cpp

    return getattr(llama_cpp, f"LLAMA_FTYPE_MOSTLY_{type}")


def quantize_gguf(
    source: str | Path,
    target: str | Path,
    type: str,
    imatrix: dict[str, ImatrixEntry] | None = None,
    threads: int = 0,
) -> Path:
    """Quantize GGUF ``source`` (F32/F16) to ``target`` (atomically) as llama.cpp file type ``type``."""
    import llama_cpp

    if type not in (*PEER_TYPES, "Q4_0") and check_type(type) not in LLAMA_CPP_TYPES:  # Q4_0: streamed export
        raise ArtifactError(f"GGUF type {type} is written directly by write_gguf, not by llama.cpp's quantizer")
    if type in NEEDS_IMATRIX and not imatrix:
        raise ArtifactError(f"GGUF type {type} needs an importance matrix: pass activation statistics")
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = _ftype(type)
    params.nthread = threads
    keep = []  # the arrays llama.cpp reads must outlive the call
    if imatrix:
        table = (llama_cpp.llama_model_imatrix_data * (len(imatrix) + 1))()
        for row, (name, entry) in zip(table, sorted(imatrix.items())):
            values = np.ascontiguousarray(entry.mean, dtype=np.float32)
            keep.append(values)
            row.name = name.encode()
            row.data = values.ctypes.data_as(ctypes.POINTER(ctypes.c_float))
            row.size = values.size
        params.imatrix = ctypes.cast(table, ctypes.POINTER(llama_cpp.llama_model_imatrix_data))
    with atomic_path(target) as tmp:
        status = llama_cpp.llama_model_quantize(str(source).encode(), str(tmp).encode(), ctypes.byref(params))
        if status != 0:
            raise ArtifactError(f"llama.cpp could not quantize {source} to {type} (status {status}; see its log)")
    del keep
    return Path(target)


def export_gguf(
    model: nn.Module,
    tokenizer,
    path: str | Path,
    type: str = "Q4_K_M",
    imatrix: dict[str, ImatrixEntry] | None = None,
    metadata: dict | None = None,
    pre_tokenizer: str | None = None,
    threads: int = 0,
    name: str | None = None,
    template: str | Path | None = None,
) -> GGUFExport:
    """GGUF of ``model`` in any export type: written directly, or F32 then llama.cpp's quantizer.
    ``template``: the source GGUF whose metadata is carried over (see ``write_gguf``)."""
    path = Path(path)
    if check_type(type) not in LLAMA_CPP_TYPES:
        return write_gguf(model, tokenizer, path, type, metadata, pre_tokenizer, name, template)
    with tempfile.TemporaryDirectory(prefix=".gguf-", dir=path.parent if path.parent.exists() else None) as tmp:
        f32 = Path(tmp) / "f32.gguf"
        source = write_gguf(model, tokenizer, f32, "F32", metadata, pre_tokenizer, name, template)
        quantize_gguf(source.path, path, type, imatrix, threads)
    result = describe_gguf(path, type, source.vocab)
    if imatrix:
        result.imatrix = {"entries": len(imatrix), "tokens": max(e.count for e in imatrix.values())}
    log.info("quantized %s to %s: %.2f bits/weight", path, type, result.bits_per_weight)
    return result
