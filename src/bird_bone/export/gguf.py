"""GGUF files that llama.cpp runs, of every supported family (``bird_bone.models.families``): F32,
F16, BF16, Q8_0 and Q4_0 written with the ``gguf`` package (GGUFWriter, gguf.quants), K- and I-quants
through llama.cpp's own quantizer (``bird_bone.export.llamacpp_quantize``).

Written here, because llama.cpp's ``convert_hf_to_gguf.py`` is a script over a directory and not a
library over an in-memory model: the hyper-parameter keys and the tensor changes it makes. Tensor
names come from the gguf package's HF-to-GGUF map for the family's architecture. LLaMA's q/k rows are
permuted per head (``permute_for_rope``: llama.cpp rotates adjacent pairs of a head's dimensions,
transformers its two halves; the other families use llama.cpp's NEOX rotary, as transformers does);
Gemma's norms (``x * (1 + w)``) are stored as ``w + 1``. Tied embeddings write no ``output.weight``.

MLPs of different widths per layer (structured pruning): a LLaMA is written as llama.cpp's ``deci``
architecture, whose ``feed_forward_length`` is an array of one width per layer; llama.cpp's other
architectures read one width for every layer, so their narrower MLPs are padded with zero neurons
(exact: a zero gate/up row and down column add nothing) and the file does not shrink.

When the model came from a GGUF file (``template``), that file's metadata (tokenizer, chat template,
hyper-parameters, pre-tokenizer, names) is carried over and only the tensors are replaced
(``bird_bone.export.gguf_template``).
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from bird_bone.errors import ArtifactError, ModelLoadError
from bird_bone.export.gguf_template import copy_metadata, template_path
from bird_bone.export.gguf_vocab import add_vocab
from bird_bone.io.atomic import atomic_path
from bird_bone.models.families import Family, family_of
from bird_bone.models.gguf_check import check_finite

log = logging.getLogger(__name__)

WRITER_TYPES = ("F32", "F16", "BF16", "Q8_0", "Q4_0")  # written by the gguf package
LLAMA_CPP_TYPES = ("Q4_K_M", "Q3_K_M", "Q2_K", "IQ2_XXS")  # quantized by llama.cpp from an F32 GGUF
EXPORT_TYPES = WRITER_TYPES + LLAMA_CPP_TYPES


@dataclass
class GGUFExport:
    """What was written: the file, its type and size, and how many bits each weight costs."""

    path: str
    type: str
    architecture: str
    size_bytes: int
    parameters: int
    bits_per_weight: float
    tensor_types: dict[str, int] = field(default_factory=dict)  # ggml type name -> tensors
    vocab: dict = field(default_factory=dict)
    imatrix: dict | None = None

    def to_dict(self) -> dict:
        return asdict(self)


def check_type(type: str) -> str:
    if type not in EXPORT_TYPES:
        raise ArtifactError(f"unknown GGUF type {type!r}: choose one of {', '.join(EXPORT_TYPES)}")
    return type


def check_architecture(model: nn.Module) -> Family:
    """The model's family; an ArtifactError naming the architecture and the supported ones otherwise."""
    try:
        return family_of(model)
    except ModelLoadError as exc:
        raise ArtifactError(f"GGUF export: {exc}") from exc


def gguf_architecture(family: Family, widths: list[int]) -> str:
    """llama.cpp's architecture name: the family's, or ``deci`` for a LLaMA with ragged MLPs."""
    import gguf

    if family.gguf_arch == "LLAMA" and len(set(widths)) > 1:
        return "deci"
    return gguf.MODEL_ARCH_NAMES[gguf.MODEL_ARCH[family.gguf_arch]]


def permute_for_rope(weight: torch.Tensor, heads: int) -> torch.Tensor:
    """Rows of each head reordered from transformers' rotate-half layout (dims i and i + d/2 rotate
    together) to llama.cpp's (dims 2i and 2i + 1 rotate together). [heads * d, ...] -> same shape."""
    rest = weight.shape[1:]
    return weight.reshape(heads, 2, weight.shape[0] // heads // 2, *rest).transpose(1, 2).reshape(weight.shape)


def _rope(config) -> dict:
    """The global layers' rotary parameters (Gemma 3 keeps one dict per layer type)."""
    params = dict(getattr(config, "rope_parameters", None) or {})
    params = params.get("full_attention", params)
    rope_type = params.get("rope_type", "default")
    if rope_type not in ("default", None):
        raise ArtifactError(f"config.rope_parameters.rope_type {rope_type!r} is not supported by GGUF export yet")
    return params


def _mlp_widths(model: nn.Module) -> list[int]:
    return [layer.mlp.down_proj.in_features for layer in model.model.layers]


def add_hyperparameters(writer, model: nn.Module, arch: str, widths: list[int]) -> None:
    """The ``<arch>.*`` keys llama.cpp's converter writes for the model's family."""
    c, family = model.config, family_of(model)
    head_dim = getattr(c, "head_dim", None) or c.hidden_size // c.num_attention_heads
    rope = _rope(c)
    writer.add_block_count(c.num_hidden_layers)
    writer.add_context_length(c.max_position_embeddings)
    writer.add_embedding_length(c.hidden_size)
    writer.add_feed_forward_length(widths if arch == "deci" else max(widths))
    writer.add_head_count(c.num_attention_heads)
    writer.add_head_count_kv(c.num_key_value_heads)
    writer.add_rope_freq_base(float(rope.get("rope_theta", getattr(c, "rope_theta", 10000.0))))
    writer.add_layer_norm_rms_eps(c.rms_norm_eps)
    writer.add_vocab_size(c.vocab_size)
    writer.add_rope_dimension_count(int(head_dim * rope.get("partial_rotary_factor", 1.0)))
    writer.add_key_length(head_dim)
    writer.add_value_length(head_dim)
    if family.sliding_window_key and getattr(c, "sliding_window", None):
        writer.add_sliding_window(c.sliding_window)


def _padded(name: str, data: torch.Tensor, width: int, target: int) -> torch.Tensor:
    """An MLP tensor of ``width`` neurons padded with zero neurons to ``target`` (see module doc)."""
    if width == target or not name.endswith(("gate_proj.weight", "up_proj.weight", "down_proj.weight")):
        return data
    if name.endswith("down_proj.weight"):
        return torch.nn.functional.pad(data, (0, target - width))
    halves = data.split(width) if name.endswith("gate_up_proj.weight") else (data,)
    return torch.cat([torch.nn.functional.pad(h, (0, 0, 0, target - width)) for h in halves])


def _is_tied(model: nn.Module, state: dict) -> bool:
    return bool(model.config.tie_word_embeddings) or (
        "lm_head.weight" in state
        and state["lm_head.weight"].data_ptr() == state["model.embed_tokens.weight"].data_ptr()
    )


def gguf_tensors(model: nn.Module, arch: str):
    """(GGUF name, float32 numpy array) of every tensor llama.cpp loads, in llama.cpp's layout."""
    import gguf

    c, family = model.config, family_of(model)
    state = {k: v for k, v in model.state_dict().items() if "rotary_emb" not in k}
    suffixes = {k.split(".", 3)[3] for k in state if k.startswith("model.layers.0.")}  # every layer's tensors
    expected = ["model.embed_tokens.weight", "model.norm.weight"]
    expected += [f"model.layers.{i}.{t}" for i in range(c.num_hidden_layers) for t in sorted(suffixes)]
    missing = [name for name in expected if name not in state]
    if missing:
        raise ArtifactError(
            f"model is missing tensor {missing[0]}" + (f" (and {len(missing) - 1} more)" * (len(missing) > 1))
        )
    tied, widths = _is_tied(model, state), _mlp_widths(model)
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH[arch.upper()], c.num_hidden_layers)
    for name, tensor in state.items():
        if tied and name == "lm_head.weight":
            continue
        target = names.get_name(name, try_suffixes=(".weight", ".bias"))
        if target is None:
            raise ArtifactError(f"tensor {name} has no GGUF name for llama.cpp's {arch} architecture")
        yield target, to_gguf_layout(name, tensor.detach().float().cpu(), c, family, arch, widths).numpy()


def to_gguf_layout(name: str, data: torch.Tensor, config, family: Family, arch: str, widths: list[int]) -> torch.Tensor:
    """Tensor ``name`` (float32) changed as llama.cpp's converter changes it (see module doc)."""
    if family.permute_qk and name.endswith(("q_proj.weight", "q_proj.bias")):
        return permute_for_rope(data, config.num_attention_heads)
    if family.permute_qk and name.endswith(("k_proj.weight", "k_proj.bias")):
        return permute_for_rope(data, config.num_key_value_heads)
    if family.norm_offset and "norm" in name and data.ndim == 1:
        return data + family.norm_offset
    if arch != "deci" and name.startswith("model.layers."):
        return _padded(name, data, widths[int(name.split(".")[2])], max(widths))
    return data


def _encode(data: np.ndarray, type: str):
    """(array, raw ggml type) of a tensor in ``type``; 1-D tensors stay F32, and a matrix whose rows do
    not split into whole quantization blocks falls back to F16, as llama.cpp's converter does."""
    import gguf

    qtype = gguf.GGMLQuantizationType[type]
    if data.ndim < 2 or qtype == gguf.GGMLQuantizationType.F32:
        return data.astype(np.float32), gguf.GGMLQuantizationType.F32
    if qtype == gguf.GGMLQuantizationType.F16:
        return data.astype(np.float16), qtype
    try:
        return gguf.quants.quantize(data, qtype), qtype
    except gguf.QuantError:
        return data.astype(np.float16), gguf.GGMLQuantizationType.F16


def write_gguf(
    model: nn.Module,
    tokenizer,
    path: str | Path,
    type: str = "F32",
    metadata: dict | None = None,
    pre_tokenizer: str | None = None,
    name: str | None = None,
    template: str | Path | None = None,
) -> GGUFExport:
    """Write ``model`` + ``tokenizer`` to GGUF ``path`` (atomically) in a gguf-package ``type``.

    ``template``: the GGUF file the model was loaded from, whose metadata is carried over; by default
    the source named by ``metadata['provenance']`` when it is a GGUF file still on disk, unchanged."""
    import gguf

    if check_type(type) not in WRITER_TYPES:
        raise ArtifactError(f"GGUF type {type} is made by llama.cpp's quantizer: use export_gguf")
    family = check_architecture(model)
    check_finite(model, "the model to export", ArtifactError, "export the last accepted checkpoint instead")
    template = Path(template) if template else template_path((metadata or {}).get("provenance"))
    if tokenizer is None and template is None:
        raise ArtifactError("GGUF export needs the model's tokenizer: the checkpoint has none")
    widths = _mlp_widths(model)
    if min(widths) < 1:
        raise ArtifactError(f"layer {widths.index(min(widths))} has an MLP of width 0: llama.cpp cannot run it")
    arch = gguf_architecture(family, widths)
    with atomic_path(path) as tmp:
        writer = gguf.GGUFWriter(tmp, arch)
        vocab = add_metadata(writer, model, tokenizer, arch, widths, type, metadata, pre_tokenizer, name, template)
        for name, data in gguf_tensors(model, arch):
            encoded, raw = _encode(data, type)
            writer.add_tensor(name, encoded, raw_dtype=raw)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
    log.info("wrote %s (%s, %s)", path, type, arch)
    return describe_gguf(path, type, vocab)


def add_metadata(writer, model, tokenizer, arch, widths, type, metadata, pre_tokenizer, name, template) -> dict:
    """Every key of the file before its tensors: the template's, or hyper-parameters and vocabulary
    of ``model`` (whose parameters may be on the meta device); returns the vocabulary's summary."""
    import gguf

    writer.add_type(gguf.GGUFType.MODEL)
    if template is not None:
        vocab = copy_metadata(writer, template, arch, widths, name)
    else:
        writer.add_name(name or str(getattr(model.config, "_name_or_path", "") or "bird-bone export"))
        add_hyperparameters(writer, model, arch, widths)
        vocab = add_vocab(writer, tokenizer, model.config.vocab_size, pre_tokenizer)
    writer.add_file_type(gguf.LlamaFileType[{"F32": "ALL_F32"}.get(type, f"MOSTLY_{type}")])
    if type in ("Q8_0", "Q4_0"):
        writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
    if metadata:
        writer.add_string("bird_bone.metadata", json.dumps(metadata, sort_keys=True, default=str))
    return vocab


def describe_gguf(path: str | Path, type: str | None = None, vocab: dict | None = None) -> GGUFExport:
    """Size, parameter count, bits per weight and tensor types of a GGUF file, read back from it
    (``type``: the export type asked for; None: the file's own ``general.file_type``)."""
    import gguf

    try:
        reader = gguf.GGUFReader(path)
    except (OSError, ValueError) as exc:
        raise ArtifactError(f"{path} is not a readable GGUF file: {exc}") from exc
    arch = str(reader.fields["general.architecture"].contents())
    if type is None:
        file_type = gguf.LlamaFileType(int(reader.fields["general.file_type"].contents())).name
        type = file_type.removeprefix("MOSTLY_").replace("ALL_", "")
    parameters = sum(int(t.n_elements) for t in reader.tensors)
    tensor_bytes = sum(int(t.n_bytes) for t in reader.tensors)
    types: dict[str, int] = {}
    for t in reader.tensors:
        types[t.tensor_type.name] = types.get(t.tensor_type.name, 0) + 1
    return GGUFExport(
        path=str(path),
        type=type,
        architecture=arch,
        size_bytes=Path(path).stat().st_size,
        parameters=parameters,
        bits_per_weight=8 * tensor_bytes / max(parameters, 1),
        tensor_types=types,
        vocab=vocab or {},
    )
