"""The model families bird-bone supports, and what differs between them, in one place.

A family is keyed by transformers' ``config.model_type``. Where a layout is already known to a library
it is taken from there: tensor names from the ``gguf`` package's HF-to-GGUF map (``gguf.TensorNameMap``
of the family's ``gguf.MODEL_ARCH``), sizes from the transformers config. Written here is only what
neither library states: how llama.cpp's converter changes a tensor on the way (LLaMA's q/k rows
permuted for its interleaved rotary, Gemma's ``1 + w`` norms stored as ``w + 1``), which linears are
fused (Phi-3), which keys a family's GGUF carries beyond the common ones, and the LoRA targets.

Phi-3's fused ``qkv_proj`` (rows q | k | v) and ``gate_up_proj`` (rows gate | up) stay fused. The
row-wise methods (Wanda, SparseGPT, N:M) prune them exactly as their parts: every row of the fused
matrix is a row of one part and the parts share their input, so each row gets the mask it would get
alone. Magnitude pruning thresholds the fused matrix as one (q, k and v share one threshold), and
NOVAQ and llama.cpp quantize it as one tensor, as llama.cpp stores it (``attn_qkv``, ``ffn_up``).
Structured pruning cuts neuron j from both halves of ``gate_up_proj`` (see ``adapters``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from bird_bone.errors import ModelLoadError

_ATTENTION = ("q_proj", "k_proj", "v_proj", "o_proj")
_MLP = ("gate_proj", "up_proj", "down_proj")


@dataclass(frozen=True)
class Family:
    """What one family's models need beyond the common decoder layout."""

    name: str
    gguf_arch: str  # member of gguf.MODEL_ARCH
    classes: tuple[str, ...]  # transformers model classes (causal LM)
    permute_qk: bool = False  # llama.cpp's LLaMA rotates adjacent pairs; transformers rotates halves
    norm_offset: float = 0.0  # GGUF stores every norm weight + this (Gemma: x * (1 + w))
    fused: dict[str, tuple[str, ...]] = field(default_factory=dict)  # fused linear -> its parts, in row order
    sliding_window_key: bool = False  # the GGUF carries ``<arch>.attention.sliding_window``

    @property
    def lora_targets(self) -> tuple[str, ...]:
        """Default LoRA target modules: every projection of attention and MLP, fused ones as such."""
        parts = {p for ps in self.fused.values() for p in ps}
        return tuple(n for n in (*_ATTENTION, *_MLP) if n not in parts) + tuple(self.fused)


FAMILIES: dict[str, Family] = {
    "llama": Family("Llama / SmolLM2", "LLAMA", ("LlamaForCausalLM",), permute_qk=True),
    "mistral": Family("Mistral", "LLAMA", ("MistralForCausalLM",), permute_qk=True),
    "qwen2": Family("Qwen2 / Qwen2.5", "QWEN2", ("Qwen2ForCausalLM",)),
    "qwen3": Family("Qwen3", "QWEN3", ("Qwen3ForCausalLM",)),
    "gemma3_text": Family("Gemma 3", "GEMMA3", ("Gemma3ForCausalLM",), norm_offset=1.0, sliding_window_key=True),
    "phi3": Family(
        "Phi-3",
        "PHI3",
        ("Phi3ForCausalLM",),
        fused={"qkv_proj": ("q_proj", "k_proj", "v_proj"), "gate_up_proj": ("gate_proj", "up_proj")},
        sliding_window_key=True,
    ),
}


def supported() -> str:
    """The supported families as one line: ``model_type`` (names)."""
    return ", ".join(f"{key} ({family.name})" for key, family in FAMILIES.items())


def family_of(model_or_config) -> Family:
    """The family of a model or config; a ModelLoadError naming it and the supported ones otherwise."""
    config = getattr(model_or_config, "config", model_or_config)
    model_type = getattr(config, "model_type", None)
    if config is not model_or_config:  # a model: its own class
        architectures = [type(model_or_config).__name__]
    else:
        architectures = list(getattr(config, "architectures", None) or [])
    family = FAMILIES.get(model_type)
    if family is None or any(a not in family.classes for a in architectures):
        name = ", ".join(architectures) or "unknown class"
        raise ModelLoadError(
            f"architecture {name} (model_type {model_type!r}) is not supported; supported: {supported()}"
        )
    return family


def fused_parts(model, name: str) -> tuple[str, ...]:
    """The parts (e.g. q_proj, k_proj, v_proj) of a fused linear ``name``; () if it is not fused."""
    return family_of(model).fused.get(name.rsplit(".", 1)[-1], ())


def lora_targets(model, requested) -> list[str]:
    """LoRA target modules of ``model`` for the ``requested`` names: a part of a fused linear
    (q_proj of Phi-3's qkv_proj) asks for the fused linear."""
    family = family_of(model)
    part_of = {p: fused for fused, parts in family.fused.items() for p in parts}
    return list(dict.fromkeys(part_of.get(name, name) for name in requested))


def embedding_scale(model) -> float:
    """The factor the model multiplies token embeddings by (Gemma: sqrt(hidden)); llama.cpp applies
    the same factor by architecture, so exported embeddings are written unscaled."""
    embed = model.get_input_embeddings()
    return float(getattr(embed, "scalar_embed_scale", 1.0))
