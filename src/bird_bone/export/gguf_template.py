"""Carry a source GGUF file's metadata into an export, so only the tensors are replaced.

A model loaded from a GGUF file (Ollama, LM Studio, the embedded models) keeps its tokenizer there in
llama.cpp's own form (SentencePiece scores or BPE merges, token types, pre-tokenizer, special ids,
chat template) with the hyper-parameters llama.cpp's converter chose. Rebuilding them from the
transformers tokenizer would be a lossy round trip, so every key is copied as it is, except the ones
that describe the tensors being replaced: the file type, the quantization version, and, when
structured pruning changed the MLP widths, ``feed_forward_length`` (a LLaMA becomes ``deci``, whose
keys are the LLaMA's renamed).
"""

from __future__ import annotations

import logging
from pathlib import Path

from bird_bone.errors import ArtifactError
from bird_bone.io.atomic import sha256_file

log = logging.getLogger(__name__)
_NOT_CARRIED = (
    "general.architecture",
    "general.type",
    "general.file_type",
    "general.quantization_version",
    "bird_bone.metadata",
)


def template_path(provenance: dict | None) -> Path | None:
    """The GGUF file named by a model's provenance, if it is still on disk with the recorded hash."""
    if not provenance or provenance.get("kind") not in ("gguf", "embedded"):
        return None
    path = Path(str(provenance.get("location", "")))
    recorded = (provenance.get("files") or {}).get(path.name)
    if not path.is_file() or path.suffix != ".gguf":
        log.warning("source GGUF %s is gone: its metadata is written anew from the model's config", path)
        return None
    if recorded and sha256_file(path) != recorded:
        log.warning("source GGUF %s changed since loading: its metadata is written anew", path)
        return None
    return path


def copy_metadata(writer, source: str | Path, arch: str, widths: list[int], name: str | None = None) -> dict:
    """Copy every key of GGUF ``source`` into ``writer`` (see module docstring); a vocab summary."""
    import gguf

    try:
        reader = gguf.GGUFReader(source)
    except (OSError, ValueError) as exc:
        raise ArtifactError(f"source GGUF {source} is not readable: {exc}") from exc
    source_arch = str(reader.fields["general.architecture"].contents())
    if source_arch not in (arch, "llama" if arch == "deci" else arch):
        raise ArtifactError(f"source GGUF {source} is a {source_arch} model, the export a {arch} one")
    ffn_key = f"{arch}.feed_forward_length"
    for key, field in reader.fields.items():
        if key.startswith("GGUF.") or key in _NOT_CARRIED or (name and key == "general.name"):
            continue
        if key.startswith(f"{source_arch}."):
            key = f"{arch}.{key.removeprefix(f'{source_arch}.')}"
        if key == ffn_key:
            continue
        vtype = field.types[0]
        sub_type = field.types[-1] if vtype == gguf.GGUFValueType.ARRAY else None
        writer.add_key_value(key, field.contents(), vtype, sub_type=sub_type)
    writer.add_feed_forward_length(widths if arch == "deci" else max(widths))
    if name:
        writer.add_name(name)
    tokens = reader.fields.get("tokenizer.ggml.tokens")
    pre, model = reader.fields.get("tokenizer.ggml.pre"), reader.fields.get("tokenizer.ggml.model")
    return {
        "source": str(source),
        "model": str(model.contents()) if model is not None else None,
        "pre": str(pre.contents()) if pre is not None else None,
        "tokens": len(tokens.data) if tokens is not None else 0,
    }
