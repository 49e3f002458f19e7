"""Write a per-tensor type plan as a GGUF file with llama.cpp's own quantizer.

The source is an F32 GGUF from ``bird_bone.export.gguf.write_gguf`` (metadata carried over from the
template); ``llama_model_quantize`` gets one exact-name ``tt_overrides`` pattern per tensor, the token
embedding / output types through their own fields (llama.cpp applies those last), and the importance
vectors only of the tensors it re-quantizes (a tensor kept in its source type is rounded without one,
which reproduces the source bytes: see ``bird_bone.export.gguf_mix``). The file type is Q8_0, whose
32-wide blocks fit every row, because llama.cpp ignores the overrides of a tensor whose default type
needs a fallback. Every written type is checked against the plan by reading the file back.
"""

from __future__ import annotations

import ctypes
import re
from pathlib import Path

import numpy as np

from bird_bone.errors import ArtifactError
from bird_bone.export.ggml_quant import ggml_type
from bird_bone.io.atomic import atomic_path

_LAST = {"token_embd.weight": "token_embedding_type", "output.weight": "output_tensor_type"}


def _overrides(plan: dict[str, str], keep: list):
    import llama_cpp

    table = (llama_cpp.llama_model_tensor_override * (len(plan) + 1))()
    for row, (name, type) in zip(table, sorted(plan.items())):
        pattern = f"^{re.escape(name)}$".encode()
        keep.append(pattern)
        row.pattern, row.type = pattern, ggml_type(type)
    table[len(plan)].pattern = None  # the list ends at a null pattern
    return ctypes.cast(table, ctypes.POINTER(llama_cpp.llama_model_tensor_override))


def _imatrix(vectors: dict[str, np.ndarray], keep: list):
    import llama_cpp

    table = (llama_cpp.llama_model_imatrix_data * (len(vectors) + 1))()
    for row, (name, values) in zip(table, sorted(vectors.items())):
        values = np.ascontiguousarray(values, dtype=np.float32)
        keep.append(values)
        row.name = name.encode()
        row.data = values.ctypes.data_as(ctypes.POINTER(ctypes.c_float))
        row.size = values.size
    return ctypes.cast(table, ctypes.POINTER(llama_cpp.llama_model_imatrix_data))


def quantize_plan(
    source: str | Path,
    target: str | Path,
    plan: dict[str, str],
    imatrix: dict[str, np.ndarray] | None = None,
    threads: int = 0,
    encoded: dict[str, np.ndarray] | None = None,
) -> Path:
    """GGUF ``target`` (atomically) with every tensor of ``plan`` (GGUF name -> ggml type) in its type,
    from F32 GGUF ``source``; ``imatrix``: importance vectors by tensor name (only those to round with);
    ``encoded``: bytes [rows, row_bytes] already rounded into a tensor's planned type (by
    ``bird_bone.export.ggml_gptq``), written over what llama.cpp's quantizer put there."""
    import llama_cpp

    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = llama_cpp.LLAMA_FTYPE_MOSTLY_Q8_0
    params.nthread = threads
    params.allow_requantize = True
    params.quantize_output_tensor = True
    keep: list = []  # what llama.cpp reads must outlive the call
    params.tt_overrides = _overrides(plan, keep)
    for name, field in _LAST.items():
        if name in plan:
            setattr(params, field, ggml_type(plan[name]))
    if imatrix:
        params.imatrix = _imatrix(imatrix, keep)
    with atomic_path(target) as tmp:
        status = llama_cpp.llama_model_quantize(str(source).encode(), str(tmp).encode(), ctypes.byref(params))
        if status != 0:
            raise ArtifactError(f"llama.cpp could not quantize {source} to the planned types (status {status})")
        if encoded:
            overwrite_tensors(tmp, {name: (plan[name], data) for name, data in encoded.items()})
    del keep
    check_types(target, plan)
    return Path(target)


def check_types(path: str | Path, plan: dict[str, str]) -> None:
    """An ArtifactError naming the first tensor of ``plan`` that ``path`` does not store in its type."""
    import gguf

    written = {t.name: t.tensor_type.name for t in gguf.GGUFReader(path).tensors}
    for name, type in sorted(plan.items()):
        if written.get(name) != type:
            raise ArtifactError(f"{path}: tensor {name} was written as {written.get(name)}, planned {type}")


def overwrite_tensors(path: str | Path, encoded: dict[str, tuple[str, np.ndarray]]) -> None:
    """Write each tensor's bytes (type, uint8 [rows, row_bytes]) in place in GGUF ``path``, whose layout
    (offsets, sizes, types) llama.cpp already wrote; the type and byte count must match exactly."""
    import gguf

    reader = gguf.GGUFReader(path, "r+")
    tensors = {t.name: t for t in reader.tensors}
    for name, (type, data) in sorted(encoded.items()):
        t = tensors.get(name)
        if t is None or t.tensor_type.name != type or int(t.n_bytes) != data.nbytes:
            found = "absent" if t is None else f"{t.tensor_type.name}, {int(t.n_bytes)} bytes"
            raise ArtifactError(f"{path}: tensor {name} is {found}, not {type} of {data.nbytes} bytes")
        view = np.asarray(t.data).view(np.uint8).reshape(-1)
        view[:] = np.ascontiguousarray(data, dtype=np.uint8).reshape(-1)
    reader.data.flush()
    del reader, tensors
