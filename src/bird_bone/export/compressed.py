"""Export to the ``compressed-tensors`` checkpoint format that vLLM and llm-compressor read.

A GPU server runs what llama.cpp cannot: 2:4 sparsity and integer weight formats with their own
kernels. This module writes a Hugging Face directory whose ``config.json`` carries a
``quantization_config`` of ``quant_method: compressed-tensors``:

- ``W4A16``: 4-bit symmetric integer weights, one scale per group of input columns, packed eight to
  an int32 (``pack-quantized``); activations stay 16-bit.
- ``W8A16``: 8-bit symmetric integer weights, one scale per output channel (``pack-quantized``).
- ``W8A8``: 8-bit weights per channel as ``int-quantized``, activations quantized per token at run time.
- ``dense``: no quantization, only the sparsity metadata below (e.g. a 2:4 model in bfloat16).

The sparsity of the decoder linears (``2:4`` when every group of four input weights keeps at most
two, ``unstructured`` otherwise) is recorded as the ``sparsity_config`` compressed-tensors writes
beside the quantization config. compressed-tensors >= 0.15 has no packed 2:4 format any more (its
own error says the Sparse24 format is gone), so the weights are stored dense and the metadata
tells a runtime which structure they have.

The format, the packing and the loading are all ``compressed-tensors``' (``apply_quantization_config``,
``ModelCompressor``) and transformers'; what is written here is only the rounding: round-to-nearest
onto the format's min-max scale grid (llm-compressor's ``QuantizationModifier`` with its default
``minmax`` observer), applied to a copy so the caller's model is untouched.
"""

from __future__ import annotations

import copy
import json
import logging
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn

from bird_bone.errors import ArtifactError
from bird_bone.io.atomic import atomic_directory

log = logging.getLogger(__name__)

# scheme -> (compressed-tensors preset, storage format)
SCHEMES = {
    "W4A16": ("W4A16", "pack-quantized"),
    "W8A16": ("W8A16", "pack-quantized"),
    "W8A8": ("INT8", "int-quantized"),
}
EXPORT_SCHEMES = ("dense", *SCHEMES)
_IGNORE = ["lm_head"]


@dataclass
class CompressedExport:
    """What was written: the directory, its scheme and the sparsity recorded in its config."""

    path: str
    scheme: str
    group_size: int | None
    sparsity_structure: str
    global_sparsity: float
    size_bytes: int

    def to_dict(self) -> dict:
        return asdict(self)


def target_linears(model: nn.Module) -> dict[str, nn.Linear]:
    """Every ``nn.Linear`` but the LM head: what compressed-tensors' ``targets=["Linear"]`` covers."""
    return {n: m for n, m in model.named_modules() if isinstance(m, nn.Linear) and n.rsplit(".", 1)[-1] not in _IGNORE}


def sparsity_structure(weights: list[torch.Tensor]) -> tuple[str, float]:
    """(``"2:4"`` or ``"unstructured"``, fraction of zeros) over ``weights``."""
    zeros = sum(int((w == 0).sum()) for w in weights)
    total = sum(w.numel() for w in weights)
    two_four = zeros > 0 and all(
        w.shape[1] % 4 == 0 and bool(((w.reshape(-1, 4) == 0).sum(-1) >= 2).all()) for w in weights
    )
    return ("2:4" if two_four else "unstructured"), (zeros / total if total else 0.0)


def pick_group_size(widths: list[int], wanted: int | None) -> int:
    """``wanted`` if it divides every input width; else (``wanted`` None) the largest of 128, 64, 32, 16."""
    if wanted is not None:
        bad = [w for w in widths if w % wanted]
        if bad:
            raise ArtifactError(f"group_size {wanted} does not divide input width {bad[0]}; choose one that does")
        return wanted
    for size in (128, 64, 32, 16):
        if all(w % size == 0 for w in widths):
            return size
    raise ArtifactError(f"no group size of 128, 64, 32 or 16 divides every input width {sorted(set(widths))}")


@torch.no_grad()
def round_to_grid(module: nn.Module) -> None:
    """Min-max scales for ``module``'s quantization scheme, and its weight rounded onto that grid."""
    from compressed_tensors.quantization.lifecycle.forward import fake_quantize
    from compressed_tensors.quantization.utils import calculate_qparams

    args = module.quantization_scheme.weights
    weight = module.weight.data
    grouped = weight.reshape(weight.shape[0], -1, args.group_size) if args.group_size else weight
    low, high = grouped.amin(-1, keepdim=not args.group_size), grouped.amax(-1, keepdim=not args.group_size)
    scale, zero_point = calculate_qparams(low, high, args)
    module.weight_scale.data.copy_(scale.reshape(module.weight_scale.shape))
    module.weight_zero_point.data.copy_(zero_point.reshape(module.weight_zero_point.shape))
    # every preset is symmetric (zero point 0), so a pruned weight rounds to exactly 0 and masks hold
    module.weight.data.copy_(fake_quantize(weight, module.weight_scale, module.weight_zero_point, args))


def _check_uniform(model: nn.Module) -> None:
    """transformers rebuilds the model from config.json: every layer must have the config's shapes."""
    config = model.config
    for name, module in target_linears(model).items():
        if name.endswith(("gate_proj", "up_proj")) and module.out_features != config.intermediate_size:
            raise ArtifactError(
                f"{name} has {module.out_features} neurons, config.intermediate_size is {config.intermediate_size}: "
                "a model whose layers were pruned to different widths cannot be written as a Hugging Face "
                "checkpoint (export it as GGUF, which keeps one width per layer)"
            )


def export_compressed(
    model: nn.Module,
    tokenizer,
    out_dir: str | Path,
    scheme: str = "W4A16",
    group_size: int | None = None,
    dtype: torch.dtype = torch.bfloat16,
) -> CompressedExport:
    """Write ``model`` (and ``tokenizer``) to ``out_dir`` as a compressed-tensors checkpoint, atomically."""
    if scheme not in EXPORT_SCHEMES:
        raise ArtifactError(f"unknown compressed-tensors scheme '{scheme}' (choose from {', '.join(EXPORT_SCHEMES)})")
    _check_uniform(model)
    model = copy.deepcopy(model).to(dtype).eval()
    linears = target_linears(model)
    structure, zeros = sparsity_structure([m.weight.data for m in linears.values()])
    size = None
    compressor = None
    if scheme in SCHEMES:
        compressor, size = _quantize(model, linears, scheme, group_size)
    with atomic_directory(out_dir) as tmp:
        if compressor is not None:
            compressor.compress_model(model)
        model.save_pretrained(tmp)
        if compressor is not None:
            compressor.update_config(str(tmp))
        _record_sparsity(tmp / "config.json", structure, zeros)
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp)
    out = Path(out_dir)
    written = sum(p.stat().st_size for p in out.iterdir() if p.is_file())
    log.info("compressed-tensors %s: %s, sparsity %.3f (%s), %d bytes", scheme, out, zeros, structure, written)
    return CompressedExport(str(out), scheme, size, structure, zeros, written)


def _quantize(model: nn.Module, linears: dict[str, nn.Linear], scheme: str, group_size: int | None):
    from compressed_tensors.compressors import ModelCompressor
    from compressed_tensors.quantization import QuantizationConfig, apply_quantization_config, preset_name_to_scheme

    preset, storage = SCHEMES[scheme]
    quant_scheme = preset_name_to_scheme(preset, ["Linear"])
    size = None
    if quant_scheme.weights.group_size:
        size = pick_group_size([m.in_features for m in linears.values()], group_size)
        quant_scheme.weights.group_size = size
    apply_quantization_config(model, QuantizationConfig(config_groups={"group_0": quant_scheme}, ignore=_IGNORE))
    for module in linears.values():
        round_to_grid(module)
    return ModelCompressor.from_pretrained_model(model, storage), size


def _record_sparsity(config_path: Path, structure: str, zeros: float) -> None:
    """compressed-tensors' ``sparsity_config`` beside its quantization config (weights stored dense)."""
    import compressed_tensors

    config = json.loads(config_path.read_text())
    quant = config.setdefault("quantization_config", {"quant_method": "compressed-tensors", "format": "dense"})
    quant["version"] = compressed_tensors.__version__
    quant["sparsity_config"] = (
        {
            "format": "dense",
            "sparsity_structure": structure,
            "global_sparsity": zeros,
            "targets": ["Linear"],
            "ignore": _IGNORE,
        }
        if zeros > 0
        else {}
    )
    config_path.write_text(json.dumps(config, indent=2))


def load_compressed(path: str | Path, dtype: torch.dtype | None = None, dequantize: bool = True) -> nn.Module:
    """The checkpoint at ``path`` as a transformers model: dense weights, dequantized on load; or
    (``dequantize=False``) compressed-tensors' own quantized forward, which also quantizes W8A8's
    activations per token as a runtime would."""
    from transformers import AutoModelForCausalLM, CompressedTensorsConfig

    path = Path(path)
    if not (path / "config.json").is_file():
        raise ArtifactError(f"{path}: not a checkpoint directory (no config.json)")
    quant = json.loads((path / "config.json").read_text()).get("quantization_config") or {}
    kwargs = (
        {"quantization_config": CompressedTensorsConfig(dequantize=dequantize)} if quant.get("config_groups") else {}
    )
    with warnings.catch_warnings():  # transformers warns that only the load-time attribute `dequantize` is taken
        warnings.filterwarnings("ignore", message="You passed `quantization_config`")
        return AutoModelForCausalLM.from_pretrained(path, dtype=dtype, **kwargs).eval()
