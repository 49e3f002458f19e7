"""NOVAQ stages 1-2 (GPTVQ when Hessian-aware) of a model larger than memory: streamed, resumable.

The same quantization as :func:`bird_bone.quant.run.compress` before refinement, run by the
streamed layer loop of ``bird_bone.calibration.streamed``: each decoder layer is loaded, each of
its linears quantized by :func:`bird_bone.quant.novaq.quantize_tensor` with the calibration inputs
that reach it, and the layer written twice: its NOVAQ codes (the file format's tensor encoding,
``bird_bone.export.novaq_codec``) to ``novaq/<layer shard>.safetensors``, and its decoded weights,
in the source dtype, as a shard of a Hugging Face checkpoint (what a reader of the NOVAQ file gets,
ready for evaluation or a GGUF export). ``novaq/novaq.json`` holds the parameters, every tensor's
manifest entry and the bit accounting.

Orders, as in memory: Hessian-aware, the Hessian of each linear comes from the inputs leaving the
already-quantized layers before it (:func:`bird_bone.quant.novaq.quantize_model_hessian`, the
reference calibration order, windows in batches of ``batch_size``, 8 there); activation-aware,
E[x_j^2] comes from the unquantized model (``input_second_moments``, one window at a time there: with
``batch_size`` 1 the sums are the same); plain, no calibration. Refinement (stage 3) needs the whole
student and teacher and is not streamed.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

import torch

from bird_bone.calibration.sequential import sequential_layer
from bird_bone.calibration.streamed import StreamPlan, stream_layers, windows_digest
from bird_bone.export.novaq_codec import encode_tensor
from bird_bone.io.tensors import save_tensors
from bird_bone.models.adapters import linear_modules
from bird_bone.models.streaming import StreamedCheckpoint
from bird_bone.quant.config import NovaqConfig
from bird_bone.quant.novaq import bit_accounting, quantize_tensor, with_embeddings

SUMMARY = "novaq/novaq.json"


@torch.no_grad()
def stream_novaq(
    source: str | Path,
    out: str | Path,
    config: NovaqConfig,
    windows: torch.Tensor | None = None,
    batch_size: int = 8,
    on_layer: Callable[[int], None] | None = None,
) -> dict:
    """Quantize the checkpoint ``source`` layer by layer into ``out`` (see module doc); returns
    the bit accounting, as ``compress``'s report has it before refinement."""
    calibrated = config.hessian_aware or config.activation_aware
    if calibrated and windows is None:
        flag = "hessian_aware" if config.hessian_aware else "activation_aware"
        raise ValueError(f"novaq.{flag} needs calibration windows")
    reader = StreamedCheckpoint(source)
    out, count = Path(out), len(reader.layers)
    settings = {
        "source": str(reader.directory.resolve()), "method": "novaq", "novaq": config.model_dump(),
        "batch_size": batch_size, "windows": windows_digest(windows if calibrated else None),
    }  # fmt: skip
    outside = _Outside(reader, config, out / "novaq" / "outside.safetensors")

    def step(index, layer, state, shard) -> dict:
        coded, tensors = _quantize_layer(f"{reader.prefix}.{index}", layer, state, index, config, index == count - 1)
        save_tensors(tensors, out / "novaq" / shard)
        return coded

    def summary(records: dict) -> dict[str, str]:
        entries = {**outside.entries, **records}
        report = {"novaq": config.model_dump(), "tensors": entries, "accounting": _accounting(reader, entries)}
        return {SUMMARY: json.dumps(report, indent=1, sort_keys=True) + "\n"}

    plan = StreamPlan(step, settings, windows if calibrated else None, batch_size, prepare=outside.prepare,
                      others=outside.tensors, extra_files=summary)  # fmt: skip
    stream_layers(reader, out, plan, on_layer)
    return json.loads((out / SUMMARY).read_text(encoding="utf-8"))["accounting"]


def _quantize_layer(prefix: str, layer, state, index: int, config: NovaqConfig, last: bool) -> tuple[dict, dict]:
    """Quantize the linears of the loaded decoder layer ``prefix`` in place (decoded weights), in the
    order of the mode (module doc); their manifest entries and encoded tensors."""
    coded: dict[str, dict] = {}
    tensors: dict[str, torch.Tensor] = {}

    def quantize(local, module, hessian=None, energy=None) -> None:
        name = f"{prefix}.{local}.weight"
        q = quantize_tensor(module.weight.detach(), config, name, energy=energy, hessian=hessian)
        module.weight.data.copy_(q.decode().to(module.weight.dtype))
        coded[name], encoded = encode_tensor(name, q)
        tensors.update(encoded)

    def visit(_index, layer, stats) -> bool:
        for local, module in linear_modules(layer).items():
            s = stats[local]
            if config.hessian_aware:
                quantize(local, module, hessian=s.hessian)
            else:  # E[x_j^2], as quant.activations.input_second_moments
                quantize(local, module, energy=s.sq_norms / s.tokens)
        return config.hessian_aware

    if state is None:
        for local, module in linear_modules(layer).items():
            quantize(local, module)
    else:
        gram = modifies = config.hessian_aware
        kwargs = state.layer_kwargs(index)
        state.hidden = sequential_layer(index, layer, state.hidden, kwargs, visit, gram, None, modifies, True, last)
    return coded, tensors


class _Outside:
    """The tensors outside the decoder layers: quantized (once) when ``include_embeddings``, as
    ``quantize_model_hessian`` does before calibrating, so the windows see the decoded embedding."""

    def __init__(self, reader: StreamedCheckpoint, config: NovaqConfig, path: Path):
        self.reader, self.config, self.path = reader, config, path
        self.decoded: dict[str, torch.Tensor] | None = None
        self.entries: dict[str, dict] = {}

    def _quantize(self) -> dict[str, torch.Tensor]:
        if self.decoded is None:
            tensors, encoded, self.decoded = self.reader.read(self.reader.other_names()), {}, {}
            for name, tensor in tensors.items():
                if self.config.include_embeddings and with_embeddings(name, tensor):
                    q = quantize_tensor(tensor.float(), self.config, name)
                    self.entries[name], coded = encode_tensor(name, q)
                    encoded.update(coded)
                    tensor = q.decode().detach()
                self.decoded[name] = tensor
            if self.config.include_embeddings:
                save_tensors(encoded, self.path)
        return self.decoded

    def prepare(self, name: str, embedding) -> None:
        if self.config.include_embeddings:
            embedding.weight.data.copy_(self._quantize()[f"{name}.weight"].float())

    def tensors(self) -> dict[str, torch.Tensor]:
        return {name: t.to(self.reader.dtypes[name]).contiguous() for name, t in self._quantize().items()}


class _Stored:
    """A quantized tensor as its manifest entry describes it: what ``bit_accounting`` reads."""

    def __init__(self, entry: dict):
        self.numel = entry["shape"][0] * entry["shape"][1]
        self._bits = entry["bits"]

    def bits(self) -> dict[str, int]:
        return self._bits


def _accounting(reader: StreamedCheckpoint, entries: dict[str, dict]) -> dict:
    """``bit_accounting`` over the skeleton, whose tied output head (not tied on the meta device) counts once."""
    model = reader.model
    head, embedding = model.get_output_embeddings(), model.get_input_embeddings()
    tied = getattr(model.config, "tie_word_embeddings", False) and head is not None
    skip = head.weight if tied and head.weight is not embedding.weight else None
    parameters = [p for p in model.parameters() if p is not skip]
    counted = SimpleNamespace(parameters=lambda: iter(parameters))
    return bit_accounting(counted, {name: _Stored(entry) for name, entry in entries.items()})
