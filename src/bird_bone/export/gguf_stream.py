"""GGUF export of a model larger than memory: a safetensors checkpoint written one tensor at a time.

The gguf package's ``GGUFWriter`` writes the header, the keys and every tensor's info first (the
shapes and sizes come from the checkpoint's safetensors headers), then each tensor's data in turn:
read from the memory-mapped checkpoint, changed to llama.cpp's layout as ``write_gguf`` changes it
(``bird_bone.export.gguf.to_gguf_layout``), encoded and written, then dropped. Peak memory: one
tensor in float32 (the token embedding, usually). Other types are made from that file by
llama.cpp's own quantizer, which memory-maps its input (``quantize_gguf``).
"""

from __future__ import annotations

import logging
import math
import tempfile
from pathlib import Path

import torch

from bird_bone.errors import ArtifactError
from bird_bone.export.gguf import (
    GGUFExport,
    _encode,
    _mlp_widths,
    add_metadata,
    check_architecture,
    describe_gguf,
    gguf_architecture,
    to_gguf_layout,
)
from bird_bone.export.llamacpp_quantize import quantize_gguf
from bird_bone.io.atomic import atomic_path
from bird_bone.models.streaming import StreamedCheckpoint

log = logging.getLogger(__name__)
STREAM_WRITER_TYPES = ("F32", "F16", "Q8_0", "Q4_0")  # written tensor by tensor (gguf package)


def _plan(reader: StreamedCheckpoint, arch: str) -> list[tuple[str, str, list[int]]]:
    """(checkpoint name, GGUF name, shape) of every tensor llama.cpp loads, in the file's order."""
    import gguf

    config = reader.model.config
    expected = {k: v.shape for k, v in reader.model.state_dict().items()}
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH[arch.upper()], config.num_hidden_layers)
    tied = bool(config.tie_word_embeddings)
    plan = []
    for name in expected:
        if "rotary_emb" in name or (tied and name == "lm_head.weight"):
            continue
        target = names.get_name(name, try_suffixes=(".weight", ".bias"))
        if target is None:
            raise ArtifactError(f"tensor {name} has no GGUF name for llama.cpp's {arch} architecture")
        plan.append((name, target, list(expected[name])))
    missing = [name for name, _, _ in plan if name not in reader.files]
    if missing:
        raise ArtifactError(f"{reader.directory}: tensor {missing[0]} is missing from the checkpoint")
    return plan


def _info(shape: list[int], type: str) -> tuple:
    """(shape, dtype, bytes, raw ggml type) of a tensor as ``_encode`` writes it in ``type``: 1-D
    tensors F32, a matrix whose rows do not split into whole blocks F16 (predicted from the shape)."""
    import gguf
    import numpy as np

    qtype = gguf.GGMLQuantizationType[type]
    if len(shape) < 2 or qtype == gguf.GGMLQuantizationType.F32:
        qtype = gguf.GGMLQuantizationType.F32
    elif qtype != gguf.GGMLQuantizationType.F16 and shape[-1] % gguf.GGML_QUANT_SIZES[qtype][0]:
        qtype = gguf.GGMLQuantizationType.F16
    block, size = gguf.GGML_QUANT_SIZES[qtype]
    return tuple(shape), np.dtype(np.float32), math.prod(shape) // block * size, qtype


def _encode_rows(data: torch.Tensor, type: str, rows: int = 2048):
    """``_encode`` of ``data`` a slice of rows at a time (blocks run along rows: the bytes are the
    same), so the quantizer's float temporaries stay a slice's size."""
    import numpy as np

    if data.ndim < 2 or data.shape[0] <= rows:
        return _encode(data.numpy(), type)[0]
    return np.concatenate([_encode(piece.numpy(), type)[0] for piece in data.split(rows)])


def write_gguf_streamed(
    directory: str | Path,
    path: str | Path,
    type: str = "F16",
    metadata: dict | None = None,
    pre_tokenizer: str | None = None,
    name: str | None = None,
) -> GGUFExport:
    """Write the checkpoint in ``directory`` (config, safetensors, tokenizer) to GGUF ``path``
    (atomically) in a gguf-package type (F32, F16, Q8_0, Q4_0), one tensor in memory at a time."""
    import gguf
    from transformers import AutoTokenizer

    if type not in STREAM_WRITER_TYPES:
        raise ArtifactError(
            f"streamed GGUF writes {', '.join(STREAM_WRITER_TYPES)}; use export_gguf_streamed for {type}"
        )
    reader = StreamedCheckpoint(directory)
    model = reader.model
    family, widths = check_architecture(model), _mlp_widths(model)
    arch = gguf_architecture(family, widths)
    plan = _plan(reader, arch)
    try:
        tokenizer = AutoTokenizer.from_pretrained(reader.directory)
    except (OSError, ValueError) as exc:
        raise ArtifactError(f"{reader.directory}: no usable tokenizer for the GGUF vocabulary: {exc}") from exc
    with atomic_path(path) as tmp:
        writer = gguf.GGUFWriter(tmp, arch)
        vocab = add_metadata(writer, model, tokenizer, arch, widths, type, metadata, pre_tokenizer, name, None)
        for _, target, shape in plan:
            writer.add_tensor_info(target, *_info(shape, type))
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_ti_data_to_file()
        for source, _, shape in plan:
            data = reader.read([source])[source].float()
            if list(data.shape) != shape:
                raise ArtifactError(
                    f"{reader.directory}: tensor {source} has shape {list(data.shape)}, expected {shape}"
                )
            if not torch.isfinite(data).all():
                raise ArtifactError(f"{reader.directory}: tensor {source} has NaN or infinite values")
            writer.write_tensor_data(
                _encode_rows(to_gguf_layout(source, data, model.config, family, arch, widths), type)
            )
        writer.close()
    log.info("wrote %s (%s, %s, streamed)", path, type, arch)
    return describe_gguf(path, type, vocab)


def export_gguf_streamed(
    directory: str | Path, path: str | Path, type: str = "Q4_0", metadata: dict | None = None, threads: int = 0
) -> GGUFExport:
    """GGUF of the checkpoint in ``directory`` in ``type``: written streamed (``STREAM_WRITER_TYPES``),
    or streamed F16 then llama.cpp's quantizer (K- and I-quants; it memory-maps the F16 file, whose
    pages it reads count towards the process's resident set while mapped)."""
    path = Path(path)
    if type in STREAM_WRITER_TYPES:
        return write_gguf_streamed(directory, path, type, metadata)
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".gguf-", dir=path.parent) as tmp:
        source = write_gguf_streamed(directory, Path(tmp) / "f16.gguf", "F16", metadata)
        quantize_gguf(source.path, path, type, None, threads)
    result = describe_gguf(path, type, source.vocab)
    log.info("quantized %s to %s: %.2f bits/weight", path, type, result.bits_per_weight)
    return result
