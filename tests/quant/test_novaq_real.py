"""NOVAQ on the embedded SmolLM2-135M (4-bit Q4_1 GGUF dequantized to float32), kept short: two decoder
layers quantized, the file written, validated and read back, and refinement on real text."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from torch.func import functional_call

from bird_bone.data.windows import evaluation_windows
from bird_bone.eval.perplexity import perplexity
from bird_bone.export.novaq_format import write_novaq
from bird_bone.export.novaq_read import read_novaq, validate_novaq
from bird_bone.quant.novaq import NovaqConfig, apply_quantized, bit_accounting, quantize_model
from bird_bone.quant.refine import RefineConfig, distillation_loss, refine

pytestmark = pytest.mark.slow


def first_layers(name: str, tensor: torch.Tensor) -> bool:
    return tensor.ndim == 2 and (".layers.0." in name or ".layers.1." in name)


@pytest.fixture(scope="module")
def quantized(smollm2):
    return quantize_model(smollm2.model, NovaqConfig(kmeans_iterations=8), first_layers, progress=False)


def test_real_model_bits_file_round_trip_and_perplexity(smollm2, quantized, wikitext_test_tokens, tmp_path):
    acc = bit_accounting(smollm2.model, quantized)
    assert len(quantized) == 14 and acc["total_weights"] == 134_515_008
    assert 1.5 < acc["quantized_bits_per_weight"] < 1.6  # 1.5 index bits + codebooks, means, outliers
    write_novaq(tmp_path / "m.novaq", smollm2.model, smollm2.tokenizer, quantized, {"test": True}, acc)
    assert validate_novaq(tmp_path / "m.novaq")["max_logit_difference"] <= 1e-2
    rebuilt, tok, manifest = read_novaq(tmp_path / "m.novaq")
    assert manifest["statistics"]["shard_bits_per_weight"] < 16.5  # everything else is float16
    windows = evaluation_windows(wikitext_test_tokens, 128, 2)
    dense = perplexity(smollm2.model, windows, progress=False).perplexity
    compressed = perplexity(rebuilt, windows, progress=False).perplexity
    in_memory = perplexity(apply_quantized(copy.deepcopy(smollm2.model), quantized), windows, progress=False)
    assert math.isfinite(compressed) and compressed > dense
    assert abs(compressed - in_memory.perplexity) / in_memory.perplexity < 0.02  # float16 dense tensors only


def test_refinement_lowers_kl_on_real_text(smollm2, quantized, wikitext_test_tokens):
    mine = {n: copy.deepcopy(q) for n, q in quantized.items()}
    windows = evaluation_windows(wikitext_test_tokens, 32, 2)
    config = RefineConfig(max_iterations=5, learning_rate=1e-3, batch_size=2, cosine_weight=0.0)
    with torch.no_grad():
        teacher = smollm2.model(input_ids=windows, output_hidden_states=True)

    def kl() -> float:
        weights = {name: q.decode() for name, q in mine.items()}
        with torch.no_grad():
            student = functional_call(smollm2.model, weights, args=(), kwargs={"input_ids": windows})
        return float(distillation_loss(teacher, student, config)[1])

    before = kl()
    result = refine(smollm2.model, mine, windows, config, progress=False)
    assert len(result.losses) == 5
    assert kl() < before
