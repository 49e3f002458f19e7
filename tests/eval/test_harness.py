"""lm-eval integration (bird_bone.eval.harness): project tasks, errors, and the perplexity cross-check.

Fast tests use a tiny random LLaMA and a word-level tokenizer trained in memory (no download).
Slow tests load the embedded SmolLM2-135M once for the module.
"""

from __future__ import annotations

import copy
import json
import math
import time
from pathlib import Path

import pytest
import torch

from bird_bone.data.windows import evaluation_windows, tokenize_text
from bird_bone.errors import EvaluationError
from bird_bone.eval import harness
from bird_bone.eval.perplexity import perplexity

torch.set_num_threads(2)

SHARED_DATA = Path(__file__).resolve().parents[2] / ".." / "shared" / "data"
WIKITEXT = SHARED_DATA / "wikitext2-raw-test.txt"
CANARY_MIN_ACC = 0.75  # real SmolLM2-135M: base form acc 0.94 / acc_norm 0.91, chat 0.91 / 0.81; tiny: ~0.3
CANARY_QUESTIONS = 32


def _canary_docs() -> list[dict]:
    lines = (harness.TASKS_DIR / "canary.jsonl").read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines if line.strip()]


@pytest.fixture(scope="module")
def tiny():
    """(model, tokenizer, vocabulary words): random 2-layer LLaMA, word-level tokenizer."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    corpus = [" ".join([doc["question"], *doc["choices"]]) for doc in _canary_docs()]
    backend = Tokenizer(models.WordLevel(unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    backend.train_from_iterator(corpus, trainers.WordLevelTrainer(special_tokens=["[UNK]", "<eos>"]))
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, eos_token="<eos>", pad_token="<eos>", unk_token="[UNK]"
    )
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
    )
    model = LlamaForCausalLM(config).eval()
    words = sorted(w for w in backend.get_vocab() if w.isalpha())
    return model, tokenizer, words


def _aligned_text(tokenizer, text: str, window: int, windows: int) -> str:
    """The start of ``text`` cut at a token boundary: exactly ``windows * window`` tokens, so the
    project's windows and lm-eval's rolling windows score the same tokens (no dropped tail)."""
    tokens = tokenize_text(tokenizer, text)
    assert tokens.numel() >= window * windows, f"text too short: {tokens.numel()} tokens"
    return tokenizer.decode(tokens[: window * windows].tolist())


def _cross_check(model, tokenizer, path: Path, window: int, batch_size: int) -> tuple[float, float, dict]:
    tokens = tokenize_text(tokenizer, path.read_text(encoding="utf-8"))
    ours = perplexity(model, evaluation_windows(tokens, window, None), batch_size=batch_size, progress=False)
    result = harness.run_lm_eval(
        model, tokenizer, [harness.LOCAL_PPL_TASK], local_text=path, max_length=window, batch_size=batch_size
    )[harness.LOCAL_PPL_TASK]
    assert tokens.numel() % window == 0, "the text must fill whole windows (see _aligned_text)"
    assert result["tokens"] == tokens.numel(), "lm-eval did not score the same tokens"
    return ours.perplexity, harness.rolling_token_perplexity(result), result


# ---------------------------------------------------------------- fast: tiny random model


def test_canary_runs_and_is_not_solved_by_a_random_model(tiny):
    model, tokenizer, _ = tiny
    results = harness.run_lm_eval(model, tokenizer, [harness.CANARY_TASK], batch_size=8)
    canary = results[harness.CANARY_TASK]
    assert 0.0 <= canary["acc"] <= 1.0 and 0.0 <= canary["acc_norm"] <= 1.0
    assert canary["sample_len"] == CANARY_QUESTIONS
    # a random model must not pass the canary: otherwise the questions leak their answers
    assert canary["acc"] < CANARY_MIN_ACC and canary["acc_norm"] < CANARY_MIN_ACC
    assert json.loads(json.dumps(results)) == results
    assert all(isinstance(v, float) for v in canary.values()) and not any("," in k for k in canary)


CHAT_TEMPLATE = (  # a minimal template with visible turn markers (the tiny word-level tokenizer has none)
    "{% for m in messages %}<{{ m['role'] }}> {{ m['content'] }} {% endfor %}"
    "{% if add_generation_prompt %}<assistant> {% endif %}"
)


def test_canary_form_follows_the_chat_template(tiny):
    _, tokenizer, _ = tiny
    base, chat = copy.deepcopy(tokenizer), copy.deepcopy(tokenizer)
    chat.chat_template = CHAT_TEMPLATE
    assert harness.resolve_task(harness.CANARY_TASK, base) == harness.CANARY_BASE_TASK
    assert harness.resolve_task(harness.CANARY_TASK, chat) == harness.CANARY_CHAT_TASK
    assert harness.resolve_task(harness.CANARY_BASE_TASK, chat) == harness.CANARY_BASE_TASK  # asked by name
    with pytest.raises(EvaluationError, match="'bird_bone_canary_chat' needs a tokenizer with a chat template"):
        harness.resolve_task(harness.CANARY_CHAT_TASK, base)


def _canary_contexts(model, tokenizer, task: str) -> list[str]:
    """The contexts lm-eval scored the choices after, in ``task``'s form."""
    manager = harness._task_manager(include_defaults=False)
    lm = harness._wrap_model(model, tokenizer, 8, None)
    out = harness._evaluate(lm, task, harness._task_spec(task, manager, None), manager, limit=2, num_fewshot=None)
    return [s["arguments"][0][0] for s in out["samples"][task]]


def test_canary_chat_form_puts_the_question_in_a_chat_turn(tiny):
    model, tokenizer, _ = tiny
    chat = copy.deepcopy(tokenizer)
    chat.chat_template = CHAT_TEMPLATE
    base = _canary_contexts(model, chat, harness.CANARY_BASE_TASK)
    turns = _canary_contexts(model, chat, harness.CANARY_CHAT_TASK)
    question = _canary_docs()[0]["question"]
    assert base[0] == question  # plain continuation: the sentence alone, no template
    assert turns[0] == f"<user> Complete the sentence with one word: {question} <assistant> {question}"


def test_canary_by_the_model_reports_its_form(tiny):
    model, tokenizer, _ = tiny
    chat = copy.deepcopy(tokenizer)
    chat.chat_template = CHAT_TEMPLATE
    plain = harness.run_lm_eval(model, tokenizer, [harness.CANARY_TASK], batch_size=8)[harness.CANARY_TASK]
    turns = harness.run_lm_eval(model, chat, [harness.CANARY_TASK], batch_size=8)[harness.CANARY_TASK]
    assert plain["chat_template"] == 0.0 and turns["chat_template"] == 1.0
    assert plain["sample_len"] == turns["sample_len"] == CANARY_QUESTIONS


def test_canary_answers_are_balanced_and_valid():
    docs = _canary_docs()
    assert len(docs) == CANARY_QUESTIONS
    for doc in docs:
        assert len(doc["choices"]) == 4 and len(set(doc["choices"])) == 4, doc
        assert 0 <= doc["answer"] < 4, doc
    counts = [sum(doc["answer"] == k for doc in docs) for k in range(4)]
    assert counts == [CANARY_QUESTIONS // 4] * 4  # a model always picking one slot scores 25 %


def test_local_ppl_matches_project_perplexity_on_tiny_model(tiny, tmp_path):
    model, tokenizer, words = tiny
    window, windows = 32, 4
    path = tmp_path / "words.txt"
    path.write_text(" ".join(words[(7 * i) % len(words)] for i in range(window * windows)), encoding="utf-8")
    ours, theirs, result = _cross_check(model, tokenizer, path, window, batch_size=4)
    assert result["tokens"] == window * windows
    assert theirs == pytest.approx(math.exp(-result["loglikelihood"] / result["tokens"]))
    assert result["token_perplexity"] == pytest.approx(theirs)
    assert abs(ours - theirs) / theirs < 0.01, (ours, theirs)
    assert result["word_perplexity"] > 1.0 and result["bits_per_byte"] > 0.0


def test_unknown_task_is_named():
    with pytest.raises(EvaluationError, match="unknown lm-eval task 'arc_eazy'.*arc_easy"):
        harness.run_lm_eval(None, None, ["arc_eazy"])


def test_local_ppl_needs_an_existing_local_text(tmp_path):
    with pytest.raises(EvaluationError, match="'bird_bone_local_ppl' needs local_text"):
        harness.run_lm_eval(None, None, ["bird_bone_local_ppl"])
    missing = tmp_path / "nope.txt"
    with pytest.raises(EvaluationError, match=f"bird_bone_local_ppl.*not found: {missing}"):
        harness.run_lm_eval(None, None, ["bird_bone_local_ppl"], local_text=missing)


def test_rolling_token_perplexity_rejects_other_results():
    with pytest.raises(EvaluationError, match="not the result of a rolling"):
        harness.rolling_token_perplexity({"acc": 0.5})
    assert harness.rolling_token_perplexity({"loglikelihood": -2.0 * 10, "tokens": 10}) == pytest.approx(math.e**2)


def test_standard_task_offline_fails_fast_and_clearly(tiny, tmp_path, monkeypatch):
    """arc_easy with no hub and an empty datasets cache: one clear error, no retry loop."""
    import datasets.config
    from huggingface_hub import constants

    offline_before = constants.HF_HUB_OFFLINE, datasets.config.HF_HUB_OFFLINE
    monkeypatch.setattr(harness, "_hub_reachable", lambda: False)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "datasets")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    model, tokenizer, _ = tiny
    start = time.perf_counter()
    with pytest.raises(EvaluationError, match="task 'arc_easy': its dataset is unreachable.*local tasks") as info:
        harness.run_lm_eval(model, tokenizer, ["arc_easy"])
    assert time.perf_counter() - start < 60
    assert "\n" not in str(info.value)
    assert (constants.HF_HUB_OFFLINE, datasets.config.HF_HUB_OFFLINE) == offline_before  # offline mode undone


def test_hub_probe_reports_an_unreachable_endpoint(monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "ENDPOINT", "http://127.0.0.1:9")  # discard port: refused at once
    assert harness._hub_reachable() is False


# ---------------------------------------------------------------- slow: the real SmolLM2-135M


@pytest.fixture(scope="module")
def real(smollm2):
    return smollm2.model, smollm2.tokenizer


@pytest.mark.slow
def test_cross_check_local_ppl_against_project_perplexity(real, tmp_path):
    """lm-eval's rolling perplexity (max_length 512) and bird_bone.eval.perplexity (windows of 512)
    on the same 16 windows of WikiText-2 (~38 kB) agree to within 1 %."""
    if not WIKITEXT.is_file():
        pytest.skip(f"evaluation text not found: {WIKITEXT} (the shared data folder is missing)")
    model, tokenizer = real
    path = tmp_path / "wikitext_head.txt"
    head = WIKITEXT.read_text(encoding="utf-8")[:45_000]
    path.write_text(_aligned_text(tokenizer, head, 512, 16), encoding="utf-8")
    ours, theirs, result = _cross_check(model, tokenizer, path, window=512, batch_size=2)
    print(
        f"\nproject perplexity {ours:.4f}  lm-eval token perplexity {theirs:.4f}  "
        f"relative difference {abs(ours - theirs) / theirs:.4%}  ({result['tokens']} tokens)"
    )
    assert result["tokens"] == 16 * 512
    assert ours == pytest.approx(36.6, rel=0.03)  # measured once: ../shared/data/README.md
    assert abs(ours - theirs) / theirs < 0.01


@pytest.mark.slow
@pytest.mark.parametrize("task", [harness.CANARY_TASK, harness.CANARY_BASE_TASK])
def test_canary_real_model_is_clearly_above_chance(real, task):
    """SmolLM2-135M-Instruct has a chat template: ``bird_bone_canary`` runs the chat form on it."""
    model, tokenizer = real
    canary = harness.run_lm_eval(model, tokenizer, [task], batch_size=8)[task]
    assert canary["chat_template"] == float(task == harness.CANARY_TASK)
    print(f"\ncanary acc {canary['acc']:.4f}  acc_norm {canary['acc_norm']:.4f}")
    assert canary["acc"] > CANARY_MIN_ACC
    assert canary["acc_norm"] > CANARY_MIN_ACC
