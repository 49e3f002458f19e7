"""Every supported family (tiny random models from their transformers configs) through every method:
magnitude, Wanda, SparseGPT, N:M, structured neurons, heal, regrow, low-rank, NOVAQ, the checkpoint
round trip, and GGUF export checked in llama.cpp; and an unsupported family failing at load."""

from __future__ import annotations

import gguf
import numpy as np
import pytest
import torch

from bird_bone.errors import ModelLoadError
from bird_bone.eval.llamacpp import load_llama
from bird_bone.export.gguf import write_gguf
from bird_bone.heal.qlora import micro_heal
from bird_bone.heal.regrow import regrow
from bird_bone.io.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from bird_bone.lowrank.svd import factorize_linears
from bird_bone.models.adapters import keep_neurons, mlp_widths, prunable_linears
from bird_bone.models.families import family_of, lora_targets
from bird_bone.models.loading import load_model
from bird_bone.prune.layerwise import prune_layers
from bird_bone.prune.structured import remove_neurons
from bird_bone.quant.novaq import NovaqConfig, apply_quantized, quantize_model
from tests.conftest import TINY_TEXT
from tests.export.test_gguf import gguf_logits
from tests.models.tiny_families import FAMILY_NAMES, make_tiny_family

families = pytest.mark.parametrize("family", FAMILY_NAMES)


@pytest.fixture(scope="module")
def windows(tiny_tokenizer) -> torch.Tensor:
    ids = tiny_tokenizer(TINY_TEXT, add_special_tokens=False)["input_ids"]
    return torch.tensor(ids[: 8 * 32]).view(8, 32)


def logits(model, ids: torch.Tensor) -> np.ndarray:
    with torch.no_grad():
        return model(ids).logits.float().numpy()


def test_an_unsupported_family_fails_at_load_naming_it_and_the_supported(tmp_path):
    from transformers import GPT2Config

    GPT2Config(n_layer=1, n_embd=8, n_head=2, architectures=["GPT2LMHeadModel"]).save_pretrained(tmp_path)
    with pytest.raises(ModelLoadError, match="GPT2LMHeadModel.*not supported; supported: llama.*gemma3_text.*phi3"):
        load_model(str(tmp_path))


@families
@pytest.mark.parametrize(
    ("method", "n", "m"), [("magnitude", 0, 0), ("wanda", 0, 0), ("sparsegpt", 0, 0), ("wanda", 2, 4)]
)
def test_pruning_methods_reach_their_sparsity(family, method, n, m, tiny_tokenizer, windows):
    model = make_tiny_family(family, len(tiny_tokenizer))
    masks = prune_layers(model, method, 0.5, windows, n=n, m=m, batch_size=4)
    linears = prunable_linears(model)
    assert set(masks) == set(linears)
    for name, mask in masks.items():
        assert abs(mask.float().mean().item() - 0.5) < 0.02, name
        assert (linears[name].weight[mask] == 0).all()
        if n:
            assert (mask.view(mask.shape[0], -1, m).sum(-1) == m - n).all()
    assert np.isfinite(logits(model, windows[:2])).all()


@families
def test_structured_cut_is_exact_and_round_trips_through_checkpoint_and_gguf(family, tiny_tokenizer, windows, tmp_path):
    model = make_tiny_family(family, len(tiny_tokenizer))
    remove_neurons(model, windows, fraction=0.25, max_fraction_per_cluster=0.5, clusters=2)
    keep_neurons(model.model.layers[0], torch.arange(40))  # ragged: llama.cpp's deci, or padded
    assert mlp_widths(model)[:2] == [40, 48]
    before = logits(model, windows[:2])
    save_checkpoint(Checkpoint(model, tiny_tokenizer, {"stage": "test"}), tmp_path / "ckpt")
    loaded = load_checkpoint(tmp_path / "ckpt").model
    assert mlp_widths(loaded) == mlp_widths(model)
    assert np.abs(logits(loaded, windows[:2]) - before).max() < 1e-5
    ids = windows[0].tolist()
    path = write_gguf(model, tiny_tokenizer, tmp_path / "cut.gguf", "F32").path
    assert np.abs(gguf_logits(path, ids) - before[0]).max() < 1e-3


@families
def test_heal_keeps_the_masks_and_regrow_reopens_some(family, tiny_tokenizer, windows):
    model = make_tiny_family(family, len(tiny_tokenizer))
    masks = prune_layers(model, "wanda", 0.5, windows, batch_size=4)
    result = micro_heal(model, windows, masks, 2, base="full", window_length=16, progress=False, learning_rate=1e-2)
    assert len(result.loss) == 2 and result.merged_modules == len(masks)
    linears = prunable_linears(model)
    assert all((linears[name].weight[mask] == 0).all() for name, mask in masks.items())
    grown, counts = regrow(model, windows[:2], masks, 0.1)
    assert sum(counts.values()) > 0 and all(grown[k].sum() < masks[k].sum() for k in counts if counts[k])


@families
def test_default_lora_targets_cover_every_linear(family, tiny_tokenizer):
    model = make_tiny_family(family, len(tiny_tokenizer))
    targets = lora_targets(model, ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"])
    names = {n.rsplit(".", 1)[-1] for n in prunable_linears(model)}
    assert set(targets) == names == set(family_of(model).lora_targets)


@families
def test_low_rank_and_novaq_keep_the_model_running(family, tiny_tokenizer, windows):
    model = make_tiny_family(family, len(tiny_tokenizer))
    config = NovaqConfig(codebook_size=8, residual_codebook_size=2, subspaces=2, hessian_aware=False)
    quantized = quantize_model(model, config, progress=False)
    assert {f"{n}.weight" for n in prunable_linears(model)} <= set(quantized)
    dense = logits(model, windows[:1])
    apply_quantized(model, quantized)
    after = logits(model, windows[:1])
    assert np.isfinite(after).all() and not np.allclose(after, dense)
    name = next(n for n in prunable_linears(model) if n.endswith("down_proj"))
    report = factorize_linears(model, [name], 0.5)
    assert report[name]["rank"] < 32 and np.isfinite(logits(model, windows[:1])).all()


@families
@pytest.mark.parametrize(("type", "tolerance"), [("F32", 1e-3), ("F16", 0.02)])
def test_gguf_export_runs_in_llama_cpp_like_transformers(family, type, tolerance, tiny_tokenizer, windows, tmp_path):
    model = make_tiny_family(family, len(tiny_tokenizer))
    result = write_gguf(model, tiny_tokenizer, tmp_path / f"{family}.gguf", type)
    assert result.architecture == gguf.MODEL_ARCH_NAMES[gguf.MODEL_ARCH[family_of(model).gguf_arch]]
    ids = windows[0].tolist() + windows[1].tolist()[:8]  # 40 tokens: past Gemma's 16-token window
    assert np.abs(gguf_logits(result.path, ids) - logits(model, torch.tensor([ids]))[0]).max() < tolerance


def test_a_gguf_source_keeps_its_metadata_and_only_the_tensors_change(tiny_tokenizer, windows, tmp_path):
    model = make_tiny_family("qwen3", len(tiny_tokenizer))
    source = write_gguf(model, tiny_tokenizer, tmp_path / "source.gguf", "F32", name="the source").path
    with torch.no_grad():
        model.model.layers[0].mlp.up_proj.weight.mul_(0.5)
    provenance = {"kind": "gguf", "location": source, "files": {}}
    out = write_gguf(model, None, tmp_path / "out.gguf", "F32", metadata={"provenance": provenance})
    a, b = gguf.GGUFReader(source).fields, gguf.GGUFReader(out.path).fields
    for key in ("general.name", "tokenizer.ggml.pre", "qwen3.attention.key_length", "tokenizer.ggml.merges"):
        assert a[key].contents() == b[key].contents(), key
    assert out.vocab["source"] == str(source)
    ids = windows[0].tolist()
    assert np.abs(gguf_logits(out.path, ids) - logits(model, torch.tensor([ids]))[0]).max() < 1e-3


def test_a_ragged_llama_from_a_gguf_source_becomes_deci_with_the_source_keys(tiny_tokenizer, windows, tmp_path):
    model = make_tiny_family("llama", len(tiny_tokenizer))
    source = write_gguf(model, tiny_tokenizer, tmp_path / "source.gguf", "F32").path
    keep_neurons(model.model.layers[1], torch.arange(24))
    provenance = {"kind": "gguf", "location": source, "files": {}}
    out = write_gguf(model, None, tmp_path / "out.gguf", "F32", metadata={"provenance": provenance})
    fields = gguf.GGUFReader(out.path).fields
    assert out.architecture == "deci" and list(fields["deci.feed_forward_length"].contents()) == [64, 24]
    assert fields["deci.rope.freq_base"].contents() == gguf.GGUFReader(source).fields["llama.rope.freq_base"].contents()
    ids = windows[0].tolist()
    assert np.abs(gguf_logits(out.path, ids) - logits(model, torch.tensor([ids]))[0]).max() < 1e-3


def sentencepiece_tokenizer():
    """A Gemma-style tokenizer (BPE with byte fallback over "\u2581"-joined words), trained in memory."""
    from tokenizers import Tokenizer, decoders, models, normalizers, trainers
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True))
    backend.normalizer = normalizers.Replace(" ", "\u2581")
    backend.decoder = decoders.Sequence([decoders.Replace("\u2581", " "), decoders.ByteFallback(), decoders.Fuse()])
    special = ["<pad>", "<eos>", "<bos>", "<unk>"] + [f"<0x{i:02X}>" for i in range(256)]
    backend.train_from_iterator(
        [TINY_TEXT], trainers.BpeTrainer(vocab_size=400, special_tokens=special, max_token_length=6)
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=backend, bos_token="<bos>", eos_token="<eos>", unk_token="<unk>", pad_token="<pad>"
    )


def test_a_sentencepiece_tokenizer_is_written_for_llama_cpp_to_tokenize_alike(tmp_path):
    tokenizer = sentencepiece_tokenizer()
    model = make_tiny_family("gemma3_text", len(tokenizer))
    path = write_gguf(model, tokenizer, tmp_path / "spm.gguf", "F32").path
    assert str(gguf.GGUFReader(path).fields["tokenizer.ggml.model"].contents()) == "llama"
    llm = load_llama(path, n_ctx=64, threads=2)
    try:
        for text in (TINY_TEXT[:120], "The bird sat on the tree. Zebras!"):
            expected = tokenizer(text, add_special_tokens=False)["input_ids"]
            assert llm.tokenize(text.encode(), add_bos=False, special=False) == expected, text
    finally:
        llm.close()


@pytest.mark.parametrize("family", ["llama", "phi3"])  # separate gate/up, and Phi-3's fused gate_up
def test_cutting_a_neuron_removes_exactly_its_contribution_biases_included(family, tiny_tokenizer):
    model = make_tiny_family(family, len(tiny_tokenizer))
    mlp = model.model.layers[0].mlp
    for name, child in list(mlp.named_children()):
        if isinstance(child, torch.nn.Linear):  # give every projection a bias
            biased = torch.nn.Linear(child.in_features, child.out_features, bias=True)
            biased.weight.data.copy_(child.weight.data)
            biased.bias.data.normal_(0, 0.1)
            setattr(mlp, name, biased)
    x = torch.randn(5, 32)
    hidden = {}
    with torch.no_grad():
        handle = mlp.down_proj.register_forward_pre_hook(lambda _m, args: hidden.update(h=args[0]))
        before = mlp(x)
        handle.remove()
        contribution = hidden["h"][:, 7:8] * mlp.down_proj.weight[:, 7]  # neuron 7's share of the output
        keep_neurons(model.model.layers[0], torch.tensor([i for i in range(64) if i != 7]))
        after = mlp(x)
    assert mlp.down_proj.in_features == 63 and mlp.down_proj.bias is not None
    assert torch.allclose(after, before - contribution, atol=1e-5)
