import hashlib

import torch

from bird_bone.seeding.fingerprint import (
    git_state,
    library_versions,
    params_hash,
    state_dict_fingerprint,
    tensor_sha256,
)
from bird_bone.seeding.report import render_report


def test_tensor_hash_is_of_the_raw_bytes():
    t = torch.arange(4, dtype=torch.int32)
    assert tensor_sha256(t) == hashlib.sha256(t.numpy().tobytes()).hexdigest()
    assert tensor_sha256(torch.ones(3, dtype=torch.bfloat16)) != tensor_sha256(torch.zeros(3, dtype=torch.bfloat16))


def test_state_dict_fingerprint_changes_with_one_weight(tiny_model):
    before = state_dict_fingerprint(tiny_model)
    assert set(before["tensors"]) == set(tiny_model.state_dict())
    with torch.no_grad():
        tiny_model.model.layers[1].self_attn.q_proj.weight[0, 0] += 1.0
    after = state_dict_fingerprint(tiny_model)
    changed = [n for n in before["tensors"] if before["tensors"][n]["sha256"] != after["tensors"][n]["sha256"]]
    assert changed == ["model.layers.1.self_attn.q_proj.weight"]
    assert before["sha256"] != after["sha256"]


def test_params_hash_ignores_key_order_but_not_values():
    assert params_hash({"a": 1, "b": {"c": 2}}) == params_hash({"b": {"c": 2}, "a": 1})
    assert params_hash({"a": 1}) != params_hash({"a": 2})


def test_versions_and_git_state(tmp_path):
    versions = library_versions()
    assert versions["torch"].startswith("2.13") and versions["python"].startswith("3.")
    assert git_state(tmp_path) == {"commit": None, "dirty": None}


def test_report_names_model_text_and_metrics():
    report = {
        "model": {"spec": "smollm2-135m", "kind": "embedded", "location": "/x.gguf", "description": "Q4_1"},
        "texts": {"evaluation": {"spec": "wiki.txt", "kind": "file", "location": "/w", "sha256": "ab" * 32}},
        "metrics": {"perplexity": 30.6, "parameters": 134515008},
        "lm_eval": {"canary": {"acc": 0.75}},
    }
    text = render_report(report)
    assert "`smollm2-135m`" in text and "wiki.txt" in text and "| perplexity | 30.6 |" in text
    assert "| parameters | 134,515,008 |" in text and "| canary | acc | 0.75 |" in text
