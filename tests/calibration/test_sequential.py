import pytest
import torch

from bird_bone.calibration.sequential import capture_layer_inputs, run_sequential
from bird_bone.calibration.statistics import InputStatistics, collect_input_statistics
from bird_bone.models.adapters import decoder_layers, linear_modules, prunable_linears


def test_statistics_match_a_direct_computation():
    x = torch.randn(3, 5, 4)
    stats = InputStatistics(4, gram=True, pattern_tokens=6)
    stats.add_batch(x[:2])
    stats.add_batch(x[2:])
    flat = x.reshape(-1, 4)
    assert torch.allclose(stats.sq_norms, flat.square().sum(0))
    assert torch.allclose(stats.abs_mean, flat.abs().mean(0))
    assert torch.allclose(stats.hessian, 2 * flat.T @ flat / 15, atol=1e-5)
    assert torch.equal(stats.patterns(), flat[:6].T)


def test_hooks_are_removed_after_the_block(tiny_model):
    modules = linear_modules(decoder_layers(tiny_model)[0])
    with collect_input_statistics(modules) as stats:
        tiny_model(torch.randint(0, 50, (1, 8)))
    assert stats["mlp.down_proj"].tokens == 8
    tiny_model(torch.randint(0, 50, (1, 8)))
    assert stats["mlp.down_proj"].tokens == 8  # no hook left behind
    assert all(not m._forward_pre_hooks for m in modules.values())


def test_driver_feeds_each_layer_the_outputs_of_the_modified_previous_layer(tiny_model):
    windows = torch.randint(0, tiny_model.config.vocab_size, (5, 12))
    seen = {}

    def visit(index, layer, stats):
        seen[index] = stats["self_attn.q_proj"].sq_norms.clone()
        if index == 0:  # modify layer 0: layer 1 must see the modified outputs
            layer.mlp.down_proj.weight.data.zero_()
        return True

    run_sequential(tiny_model, windows, visit, batch_size=2, progress=False)
    # reference: inputs of layer 1 in a plain forward of the already-modified model
    modules = {"q": decoder_layers(tiny_model)[1].self_attn.q_proj}
    with collect_input_statistics(modules) as reference:
        tiny_model(windows)
    assert torch.allclose(seen[1], reference["q"].sq_norms, rtol=1e-4)
    assert set(seen) == {0, 1}


def test_capture_and_unmodified_pass(tiny_model):
    windows = torch.randint(0, tiny_model.config.vocab_size, (5, 12))
    hidden, kwargs = capture_layer_inputs(tiny_model, windows, batch_size=2)
    assert [h.shape[0] for h in hidden] == [2, 2, 1] and len(kwargs) == 3
    tokens = {}
    run_sequential(
        tiny_model,
        windows,
        lambda i, layer, s: tokens.update({i: s["mlp.down_proj"].tokens}) or False,
        progress=False,
        modifies=False,
    )
    assert tokens == {0: 60, 1: 60}
    assert len(prunable_linears(tiny_model)) == 14


def test_upper_block_gram_equals_the_full_product():
    from bird_bone.calibration.statistics import accumulate_upper_gram, symmetric_from_upper

    x = torch.randn(50, 13)
    xtx = torch.zeros(13, 13)
    accumulate_upper_gram(xtx, x[:20])
    accumulate_upper_gram(xtx, x[20:])
    assert torch.allclose(symmetric_from_upper(xtx), x.T @ x, atol=1e-4)


def test_modules_fed_the_same_tensor_share_statistics(tiny_model):
    layer = decoder_layers(tiny_model)[0]
    with collect_input_statistics(linear_modules(layer), gram=True) as stats:
        tiny_model(torch.randint(0, 50, (2, 8)))
        tiny_model(torch.randint(0, 50, (1, 8)))
    assert stats["self_attn.q_proj"] is stats["self_attn.k_proj"] is stats["self_attn.v_proj"]
    assert stats["mlp.gate_proj"] is stats["mlp.up_proj"]
    assert stats["self_attn.o_proj"] is not stats["self_attn.q_proj"]
    assert stats["self_attn.q_proj"].tokens == 24 and stats["mlp.down_proj"].tokens == 24


def test_linear_groups_follow_the_shared_inputs(tiny_model):
    from bird_bone.calibration.sequential import linear_groups

    hidden, kwargs = capture_layer_inputs(tiny_model, torch.randint(0, 50, (1, 8)), batch_size=1)
    groups = linear_groups(decoder_layers(tiny_model)[0], hidden[0], kwargs[0])
    assert groups == [
        ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"],
        ["self_attn.o_proj"],
        ["mlp.gate_proj", "mlp.up_proj"],
        ["mlp.down_proj"],
    ]


@pytest.mark.parametrize("batch_size", [8, 2, 1])  # one chunk; chunks of 2, 2, 1 windows; one window each
def test_true_sequential_calibrates_each_group_on_the_modified_earlier_ones(tiny_model, batch_size):
    from bird_bone.calibration.sequential import run_true_sequential

    windows = torch.randint(0, tiny_model.config.vocab_size, (5, 12))
    seen = []

    def visit_group(index, modules, stats):
        seen.append((index, list(modules), stats.tokens, stats.sq_norms.clone()))
        for module in modules.values():  # modify every linear: the next group must see it
            module.weight.data.mul_(0.5)

    run_true_sequential(tiny_model, windows, visit_group, progress=False, batch_size=batch_size)
    assert [(i, len(names), tokens) for i, names, tokens, _ in seen] == [
        (i, k, 60) for i in (0, 1) for k in (3, 1, 2, 1)
    ]
    # reference: a plain forward of the finished model gives every group the same inputs
    layer = decoder_layers(tiny_model)[1]
    with collect_input_statistics(linear_modules(layer)) as reference:
        tiny_model(windows)
    for (_, names, _, sq_norms), name in zip(
        seen[4:], ("self_attn.q_proj", "self_attn.o_proj", "mlp.gate_proj", "mlp.down_proj")
    ):
        assert names[0] == name and torch.allclose(sq_norms, reference[name].sq_norms, rtol=1e-4)


def test_chunks_split_the_batch_dimension_of_keyword_tensors_only():
    from bird_bone.calibration.sequential import _split_batch

    mask, cos = torch.ones(5, 1, 12, 12), torch.ones(1, 12, 4)
    parts = _split_batch({"attention_mask": mask, "position_embeddings": (cos, cos), "use_cache": False}, 5, 2, 3)
    assert [p["attention_mask"].shape[0] for p in parts] == [2, 2, 1]
    assert all(p["position_embeddings"][0] is cos and p["use_cache"] is False for p in parts)


def test_true_sequential_names_a_layer_whose_linears_run_out_of_order(tiny_model):
    from bird_bone.calibration.sequential import run_true_sequential

    attention = decoder_layers(tiny_model)[1].self_attn
    attention_forward = attention.forward

    def o_first(hidden_states, *args, **kwargs):  # layer 1 runs o before q/k/v
        attention.o_proj(hidden_states)
        return attention_forward(hidden_states, *args, **kwargs)

    attention.forward = o_first
    with pytest.raises(TypeError, match="layer 1"):
        run_true_sequential(tiny_model, torch.randint(0, 50, (4, 8)), lambda *a: None, progress=False, batch_size=2)
