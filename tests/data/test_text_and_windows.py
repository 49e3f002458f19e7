import copy
import hashlib
import random

import pytest
import torch

from bird_bone.data.text import load_text
from bird_bone.data.windows import calibration_windows, evaluation_windows, tokenize_text
from bird_bone.errors import TextLoadError
from tests.conftest import shared_file


def test_local_file_is_read_and_hashed(tmp_path):
    path = tmp_path / "t.txt"
    path.write_text("hello bones\n")
    text, source = load_text(str(path))
    assert text == "hello bones\n"
    assert source.kind == "file" and source.characters == 12
    assert source.sha256 == hashlib.sha256(b"hello bones\n").hexdigest()


def test_missing_file_names_the_path_and_fallback_is_used(tmp_path):
    missing = tmp_path / "nope.txt"
    with pytest.raises(TextLoadError, match="nope.txt"):
        load_text(str(missing), fallback=None)
    text, source = load_text(str(missing), fallback="embedded")
    assert source.kind == "embedded" and len(text) > 100_000


def test_non_utf8_file_is_a_clear_error(tmp_path):
    path = tmp_path / "latin1.txt"
    path.write_bytes("caf\xe9".encode("latin-1"))
    with pytest.raises(TextLoadError, match="latin1.txt is not UTF-8"):
        load_text(str(path))


def test_unreachable_hub_dataset_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    with pytest.raises(TextLoadError, match="dataset 'someone/no-such-dataset'"):
        load_text("someone/no-such-dataset")


def test_evaluation_windows_are_the_first_non_overlapping_ones():
    tokens = torch.arange(100)
    windows = evaluation_windows(tokens, 10, 3)
    assert windows.shape == (3, 10)
    assert torch.equal(windows.reshape(-1), torch.arange(30))
    assert evaluation_windows(tokens, 10, None).shape == (10, 10)
    with pytest.raises(TextLoadError, match="100 tokens: too short for 11 windows of 10"):
        evaluation_windows(tokens, 10, 11)


def test_calibration_windows_follow_the_reference_sampler():
    tokens = torch.arange(1000)
    windows = calibration_windows(tokens, 32, 4, seed=0)
    random.seed(0)  # the Wanda / SparseGPT code: random.seed(seed); randint(0, n - L - 1)
    starts = [random.randint(0, 1000 - 32 - 1) for _ in range(4)]
    assert windows[:, 0].tolist() == starts
    assert torch.equal(windows[1], torch.arange(starts[1], starts[1] + 32))
    assert not torch.equal(calibration_windows(tokens, 32, 4, seed=1), windows)
    with pytest.raises(TextLoadError, match="too short"):
        calibration_windows(torch.arange(20), 32, 1, seed=0)


def test_tokenize_adds_no_special_tokens(tiny_tokenizer):
    ids = tokenize_text(tiny_tokenizer, "The cat sat")
    assert ids.dtype == torch.long and ids.ndim == 1
    assert tiny_tokenizer.bos_token_id not in ids.tolist()


def test_shared_wikitext_is_the_documented_file():
    path = shared_file("wikitext2-raw-test.txt")
    assert hashlib.sha256(path.read_bytes()).hexdigest().startswith("aca2f467")


def test_windows_start_with_bos_only_where_the_tokenizer_adds_one(tiny_tokenizer):
    from tokenizers import processors

    from bird_bone.data.windows import bos_token, calibration_windows, evaluation_windows, window_convention

    tokens = torch.arange(3, 200)
    assert bos_token(tiny_tokenizer) is None and "no BOS" in window_convention(tiny_tokenizer)
    plain = evaluation_windows(tokens, 16, 4, bos=bos_token(tiny_tokenizer))
    assert torch.equal(plain, tokens[:64].view(4, 16))  # unchanged where the tokenizer adds no BOS
    adds = copy.deepcopy(tiny_tokenizer)
    adds._tokenizer.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    bos = bos_token(adds)
    assert bos == 1
    with_bos = evaluation_windows(tokens, 16, 4, bos=bos)
    assert (with_bos[:, 0] == 1).all() and torch.equal(with_bos[:, 1:], plain[:, 1:])
    calib = calibration_windows(tokens, 16, 3, seed=0, bos=bos)
    assert (calib[:, 0] == 1).all() and torch.equal(calib[:, 1:], calibration_windows(tokens, 16, 3, seed=0)[:, 1:])
