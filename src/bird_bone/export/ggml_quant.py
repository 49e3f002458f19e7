"""Quantize a float32 matrix to any ggml type exactly as llama.cpp's quantizer does, through a small
ctypes binding to llama-cpp-python's ``libggml-base.so`` (``ggml_quantize_chunk``, ``ggml_row_size``).

Needed because the ``gguf`` package quantizes only a few types (F16, BF16, Q8_0, Q4_0 ...) and never with
an importance vector, while llama.cpp's quantizer rounds every K- and I-quant (and Q4_0 ... Q5_1) with
one: to measure the error a type really has in the file llama.cpp writes, the bytes must come from the
same C function llama.cpp calls. Decoding back to float32 uses ``gguf.quants.dequantize``.
"""

from __future__ import annotations

import ctypes
import functools
from pathlib import Path

import numpy as np

from bird_bone.errors import ArtifactError


@functools.cache
def _lib() -> ctypes.CDLL:
    import llama_cpp

    path = Path(llama_cpp.__file__).parent / "lib" / "libggml-base.so"
    if not path.is_file():
        raise ArtifactError(f"llama-cpp-python has no {path}: cannot quantize with llama.cpp's own code")
    lib = ctypes.CDLL(str(path))
    lib.ggml_quantize_chunk.restype = ctypes.c_size_t
    lib.ggml_quantize_chunk.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64,
                                        ctypes.c_int64, ctypes.c_int64, ctypes.c_void_p]  # fmt: skip
    lib.ggml_row_size.restype = ctypes.c_size_t
    lib.ggml_row_size.argtypes = [ctypes.c_int, ctypes.c_int64]
    lib.ggml_blck_size.restype = ctypes.c_int64
    lib.ggml_blck_size.argtypes = [ctypes.c_int]
    lib.ggml_quantize_requires_imatrix.restype = ctypes.c_bool
    lib.ggml_quantize_requires_imatrix.argtypes = [ctypes.c_int]
    return lib


def ggml_type(name: str) -> int:
    """The ggml type id of ``name`` (``Q4_K``, ``IQ4_NL`` ...); an ArtifactError for an unknown name."""
    import gguf

    try:
        return int(gguf.GGMLQuantizationType[name])
    except KeyError:
        raise ArtifactError(f"unknown ggml type {name!r}") from None


def block_size(type: str) -> int:
    return int(_lib().ggml_blck_size(ggml_type(type)))


def row_bytes(type: str, width: int) -> int:
    """Bytes llama.cpp stores for one row of ``width`` values in ``type``."""
    return int(_lib().ggml_row_size(ggml_type(type), width))


def fits(type: str, width: int) -> bool:
    """True when rows of ``width`` split into whole blocks of ``type``."""
    return width % block_size(type) == 0


def requires_imatrix(type: str) -> bool:
    return bool(_lib().ggml_quantize_requires_imatrix(ggml_type(type)))


def quantize(weight: np.ndarray, type: str, imatrix: np.ndarray | None = None) -> np.ndarray:
    """The bytes llama.cpp writes for ``weight`` [rows, width] in ``type`` (uint8 [rows, row_bytes]);
    ``imatrix`` [width]: E[x_j^2] of each input column, as the quantizer weighs rounding errors."""
    weight = np.ascontiguousarray(weight, dtype=np.float32)
    if weight.ndim != 2:
        raise ArtifactError(f"ggml quantization needs a matrix, got shape {weight.shape}")
    rows, width = weight.shape
    if not fits(type, width):
        raise ArtifactError(f"rows of {width} do not split into {type} blocks of {block_size(type)}")
    if imatrix is None and requires_imatrix(type):
        raise ArtifactError(f"ggml type {type} needs an importance matrix")
    if imatrix is not None:
        imatrix = np.ascontiguousarray(imatrix, dtype=np.float32)
        if imatrix.shape != (width,):
            raise ArtifactError(f"importance vector of shape {imatrix.shape} for rows of {width}")
    out = np.empty((rows, row_bytes(type, width)), dtype=np.uint8)
    written = _lib().ggml_quantize_chunk(ggml_type(type), weight.ctypes.data, out.ctypes.data, 0, rows, width,
                                         None if imatrix is None else imatrix.ctypes.data)  # fmt: skip
    if written != out.nbytes:
        raise ArtifactError(f"ggml wrote {written} bytes for a {rows} x {width} {type} matrix, not {out.nbytes}")
    return out


def dequantize(data: np.ndarray, type: str) -> np.ndarray:
    """float32 [rows, width] from the bytes of ``quantize`` (``gguf.quants.dequantize``)."""
    import gguf

    return gguf.quants.dequantize(data, gguf.GGMLQuantizationType[type]).astype(np.float32, copy=False)


def round_trip(weight: np.ndarray, type: str, imatrix: np.ndarray | None = None) -> np.ndarray:
    """``weight`` as llama.cpp would store it in ``type``, decoded back to float32."""
    return dequantize(quantize(weight, type, imatrix), type)
