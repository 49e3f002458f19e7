import math

import pytest
import torch
import torch.nn.functional as F

from bird_bone.data.windows import evaluation_windows
from bird_bone.eval.metrics import measure_model
from bird_bone.eval.perplexity import perplexity
from bird_bone.eval.speed import bits_per_weight, bytes_on_disk, forward_throughput, parameter_count


def test_perplexity_equals_exp_of_mean_token_nll(tiny_model):
    torch.manual_seed(1)
    windows = torch.randint(0, tiny_model.config.vocab_size, (3, 16))
    result = perplexity(tiny_model, windows, batch_size=2, progress=False)
    with torch.no_grad():
        logits = tiny_model(windows).logits[:, :-1]
        nll = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), windows[:, 1:].reshape(-1), reduction="sum")
    assert result.predicted_tokens == 3 * 15
    assert result.perplexity == pytest.approx(math.exp(nll.item() / 45), rel=1e-5)
    # batch size changes nothing
    assert perplexity(tiny_model, windows, batch_size=3, progress=False).nll == pytest.approx(result.nll, rel=1e-5)


def test_random_model_is_near_uniform_and_a_bad_shape_is_refused(tiny_model):
    windows = torch.randint(0, tiny_model.config.vocab_size, (2, 32))
    ppl = perplexity(tiny_model, windows, progress=False).perplexity
    assert 0.5 * tiny_model.config.vocab_size < ppl < 2 * tiny_model.config.vocab_size
    with pytest.raises(ValueError, match="shape"):
        perplexity(tiny_model, windows[0], progress=False)


def test_parameter_count_counts_tied_weights_once_and_sees_zeros(tiny_model):
    counts = parameter_count(tiny_model)
    assert counts["parameters"] == sum(p.numel() for p in set(tiny_model.parameters()))
    with torch.no_grad():
        tiny_model.model.layers[0].mlp.up_proj.weight.zero_()
    assert parameter_count(tiny_model)["nonzero_parameters"] == counts["nonzero_parameters"] - 64 * 32


def test_bytes_and_bits_per_weight(tmp_path):
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "a").write_bytes(b"x" * 100)
    (tmp_path / "b").write_bytes(b"x" * 28)
    assert bytes_on_disk([tmp_path / "d", tmp_path / "b"]) == 128
    assert bits_per_weight(128, 256) == 4.0


def test_throughput_and_measure_model(tiny_model, tmp_path):
    windows = evaluation_windows(torch.randint(0, tiny_model.config.vocab_size, (200,)), 20, 8)
    speed = forward_throughput(tiny_model, windows, batch_size=4, batches=2)
    assert speed["tokens"] == 160 and speed["tokens_per_second"] > 0
    (tmp_path / "w").write_bytes(b"x" * 1000)
    metrics = measure_model(tiny_model, windows, files=[tmp_path / "w"])
    assert metrics["eval_predicted_tokens"] == 8 * 19
    zeros = metrics["parameters"] - metrics["nonzero_parameters"]
    assert 0 < zeros < 0.01 * metrics["parameters"]  # only the padding token's embedding row is zero
    assert metrics["sparsity"] == pytest.approx(zeros / metrics["parameters"])
    assert metrics["bits_per_weight"] == pytest.approx(8000 / metrics["parameters"])


def test_prefill_throughput_keeps_only_the_last_logits(tiny_model):
    windows = torch.randint(0, tiny_model.config.vocab_size, (4, 16))
    seen = []
    handle = tiny_model.lm_head.register_forward_hook(lambda _m, _a, out: seen.append(out.shape[1]))
    forward_throughput(tiny_model, windows, batch_size=2, batches=2, logits_to_keep=1)
    handle.remove()
    assert seen == [1, 1, 1]  # warm-up and two timed batches, one position each
