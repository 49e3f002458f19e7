"""benchmarks/autoround_peer.py: file naming and reuse, the table, and (only where the optional extra
``autoround`` is installed) one real AutoRound GGUF export of a tiny model that llama.cpp scores."""

from __future__ import annotations

import importlib.util
import math

import pytest
import torch

from bird_bone.eval.llamacpp import llama_perplexity
from bird_bone.export.gguf import describe_gguf
from tests.conftest import ROOT, TINY_TEXT, make_tiny_llama


def _peer():
    spec = importlib.util.spec_from_file_location("autoround_peer", ROOT / "benchmarks" / "autoround_peer.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_files_already_written_are_reused_per_scheme_and_settings(tmp_path):
    peer = _peer()
    for name in ("q4_k_m-iters0.gguf", "q3_k_m-iters50-lr0.005.gguf", "q3_k_m-iters200.gguf"):
        (tmp_path / name).write_bytes(b"GGUF")
    calibration = torch.zeros(2, 8, dtype=torch.long)
    paths = peer.autoround_ggufs(tmp_path / "no-model", tmp_path, ["q4_k_m", "q3_k_m"], calibration)
    # AutoRound's advice for GGUF: RTN at 4 bits; at 3 bits tuned, its light recipe by default
    assert paths == {"q4_k_m": tmp_path / "q4_k_m-iters0.gguf", "q3_k_m": tmp_path / "q3_k_m-iters50-lr0.005.gguf"}
    tuned = peer.autoround_ggufs(tmp_path / "no-model", tmp_path, ["q3_k_m"], calibration, iters={"q3_k_m": 200})
    assert tuned == {"q3_k_m": tmp_path / "q3_k_m-iters200.gguf"}  # its default lr (1/iters): no lr in the name


def test_table_has_one_row_per_file():
    row = {"scheme": "q2_k_s", "file": "q2_k_s-iters0.gguf", "bytes": 96081248, "bits_per_weight": 5.6301}
    lines = _peer().table([{**row, "WikiText-2": 37.4412, "TinyStories": 9.0}]).splitlines()
    assert len(lines) == 3
    assert lines[2] == "| q2_k_s | q2_k_s-iters0.gguf | 96,081,248 | 5.63 | 37.441 | 9.000 |"


@pytest.mark.slow
@pytest.mark.skipif(
    importlib.util.find_spec("auto_round") is None,
    reason="the optional extra `autoround` is not installed (make autoround); CI runs without it",
)
def test_autoround_exports_a_gguf_that_llama_cpp_scores(tmp_path, smollm2):
    # A tiny random model with SmolLM2's tokenizer: AutoRound's GGUF writer (llama.cpp's converter)
    # knows that tokenizer's pre-tokenizer, not a tokenizer trained in the test.
    tokenizer = smollm2.tokenizer
    make_tiny_llama(len(tokenizer)).save_pretrained(tmp_path / "hf")
    tokenizer.save_pretrained(tmp_path / "hf")
    tokens = torch.tensor(tokenizer(TINY_TEXT)["input_ids"][:256]).view(4, 64)
    paths = _peer().autoround_ggufs(tmp_path / "hf", tmp_path / "out", ["q4_0"], calibration=tokens)
    assert describe_gguf(paths["q4_0"]).tensor_types.get("Q4_0", 0) >= 14  # every decoder linear of 2 layers
    assert math.isfinite(llama_perplexity(paths["q4_0"], tokens[:1], threads=2).perplexity)
