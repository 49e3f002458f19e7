"""GGUF files of LLaMA-family models that llama.cpp runs: F32, F16, BF16, Q8_0 and Q4_0 written with
the ``gguf`` package (GGUFWriter, gguf.quants), K- and I-quants through llama.cpp's own quantizer
(``bird_bone.export.llamacpp_quantize``).

Written here, because llama.cpp's ``convert_hf_to_gguf.py`` is a script over a directory and not a
library over an in-memory model: the hyper-parameter keys and the tensor layout it writes for
``LlamaForCausalLM``. Tensor names come from the gguf package's own HF-to-GGUF name map. q/k
projections are permuted per head (``permute_for_rope``) because llama.cpp rotates adjacent pairs
of a head's dimensions while transformers rotates its two halves. Tied embeddings write no
``output.weight``. MLPs of different widths per layer (structured pruning) are written as llama.cpp's
``deci`` architecture, a LLaMA whose ``feed_forward_length`` is an array of one width per layer
(llama.cpp's ``llama`` architecture reads one width for every layer).
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from bird_bone.errors import ArtifactError
from bird_bone.export.gguf_vocab import add_vocab
from bird_bone.io.atomic import atomic_path
from bird_bone.models.gguf_check import check_finite

log = logging.getLogger(__name__)

WRITER_TYPES = ("F32", "F16", "BF16", "Q8_0", "Q4_0")  # written by the gguf package
LLAMA_CPP_TYPES = ("Q4_K_M", "Q3_K_M", "Q2_K", "IQ2_XXS")  # quantized by llama.cpp from an F32 GGUF
EXPORT_TYPES = WRITER_TYPES + LLAMA_CPP_TYPES
_LAYER_TENSORS = (
    "input_layernorm.weight",
    "self_attn.q_proj.weight",
    "self_attn.k_proj.weight",
    "self_attn.v_proj.weight",
    "self_attn.o_proj.weight",
    "post_attention_layernorm.weight",
    "mlp.gate_proj.weight",
    "mlp.up_proj.weight",
    "mlp.down_proj.weight",
)


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


def check_architecture(model: nn.Module) -> None:
    config = getattr(model, "config", None)
    model_type = getattr(config, "model_type", None)
    if model_type != "llama" or type(model).__name__ != "LlamaForCausalLM":
        raise ArtifactError(
            f"GGUF export supports LlamaForCausalLM (model_type 'llama'); got {type(model).__name__} "
            f"with model_type {model_type!r}"
        )


def permute_for_rope(weight: torch.Tensor, heads: int) -> torch.Tensor:
    """Rows of each head reordered from transformers' rotate-half layout (dims i and i + d/2 rotate
    together) to llama.cpp's (dims 2i and 2i + 1 rotate together). [heads * d, ...] -> same shape."""
    rest = weight.shape[1:]
    return weight.reshape(heads, 2, weight.shape[0] // heads // 2, *rest).transpose(1, 2).reshape(weight.shape)


def _rope_theta(config) -> float:
    params = getattr(config, "rope_parameters", None) or {}
    rope_type = params.get("rope_type", "default")
    if rope_type not in ("default", None):
        raise ArtifactError(f"config.rope_parameters.rope_type {rope_type!r} is not supported by GGUF export yet")
    return float(params.get("rope_theta", getattr(config, "rope_theta", 10000.0)))


def _mlp_widths(model: nn.Module) -> list[int]:
    return [layer.mlp.down_proj.in_features for layer in model.model.layers]


def add_hyperparameters(writer, model: nn.Module, arch: str, widths: list[int]) -> None:
    """The ``<arch>.*`` keys llama.cpp's converter writes for LlamaForCausalLM."""
    c = model.config
    head_dim = getattr(c, "head_dim", None) or c.hidden_size // c.num_attention_heads
    writer.add_block_count(c.num_hidden_layers)
    writer.add_context_length(c.max_position_embeddings)
    writer.add_embedding_length(c.hidden_size)
    writer.add_feed_forward_length(widths if arch == "deci" else widths[0])
    writer.add_head_count(c.num_attention_heads)
    writer.add_head_count_kv(c.num_key_value_heads)
    writer.add_rope_freq_base(_rope_theta(c))
    writer.add_layer_norm_rms_eps(c.rms_norm_eps)
    writer.add_vocab_size(c.vocab_size)
    writer.add_rope_dimension_count(head_dim)
    writer.add_key_length(head_dim)
    writer.add_value_length(head_dim)


def gguf_tensors(model: nn.Module, arch: str):
    """(GGUF name, float32 numpy array) of every tensor llama.cpp loads, q/k permuted."""
    import gguf

    c = model.config
    state = {k: v for k, v in model.state_dict().items() if "rotary_emb" not in k}
    expected = ["model.embed_tokens.weight", "model.norm.weight"]
    expected += [f"model.layers.{i}.{t}" for i in range(c.num_hidden_layers) for t in _LAYER_TENSORS]
    tied = c.tie_word_embeddings or (
        "lm_head.weight" in state
        and state["lm_head.weight"].data_ptr() == state["model.embed_tokens.weight"].data_ptr()
    )
    if not tied:
        expected.append("lm_head.weight")
    missing = [name for name in expected if name not in state]
    if missing:
        raise ArtifactError(
            f"model is missing tensor {missing[0]}" + (f" (and {len(missing) - 1} more)" * (len(missing) > 1))
        )
    names = gguf.get_tensor_name_map(
        gguf.MODEL_ARCH.DECI if arch == "deci" else gguf.MODEL_ARCH.LLAMA, c.num_hidden_layers
    )
    for name, tensor in state.items():
        if tied and name == "lm_head.weight":
            continue
        target = names.get_name(name, try_suffixes=(".weight", ".bias"))
        if target is None:
            raise ArtifactError(f"tensor {name} has no GGUF name for the LLaMA architecture")
        data = tensor.detach().float().cpu()
        if name.endswith(("q_proj.weight", "q_proj.bias")):
            data = permute_for_rope(data, c.num_attention_heads)
        elif name.endswith(("k_proj.weight", "k_proj.bias")):
            data = permute_for_rope(data, c.num_key_value_heads)
        yield target, data.numpy()


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
) -> GGUFExport:
    """Write ``model`` + ``tokenizer`` to GGUF ``path`` (atomically) in a gguf-package ``type``."""
    import gguf

    if check_type(type) not in WRITER_TYPES:
        raise ArtifactError(f"GGUF type {type} is made by llama.cpp's quantizer: use export_gguf")
    check_architecture(model)
    check_finite(model, "the model to export", ArtifactError, "export the last accepted checkpoint instead")
    if tokenizer is None:
        raise ArtifactError("GGUF export needs the model's tokenizer: the checkpoint has none")
    widths = _mlp_widths(model)
    if min(widths) < 1:
        raise ArtifactError(f"layer {widths.index(min(widths))} has an MLP of width 0: llama.cpp cannot run it")
    arch = "llama" if len(set(widths)) == 1 else "deci"
    file_type = {"F32": "ALL_F32"}.get(type, f"MOSTLY_{type}")
    with atomic_path(path) as tmp:
        writer = gguf.GGUFWriter(tmp, arch)
        writer.add_type(gguf.GGUFType.MODEL)
        writer.add_name(name or str(getattr(model.config, "_name_or_path", "") or "bird-bone export"))
        add_hyperparameters(writer, model, arch, widths)
        writer.add_file_type(gguf.LlamaFileType[file_type])
        if type in ("Q8_0", "Q4_0"):
            writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
        vocab = add_vocab(writer, tokenizer, model.config.vocab_size, pre_tokenizer)
        if metadata:
            writer.add_string("bird_bone.metadata", json.dumps(metadata, sort_keys=True, default=str))
        for name, data in gguf_tensors(model, arch):
            encoded, raw = _encode(data, type)
            writer.add_tensor(name, encoded, raw_dtype=raw)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
    log.info("wrote %s (%s, %s)", path, type, arch)
    return describe_gguf(path, type, vocab)


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
