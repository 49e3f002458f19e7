"""llama.cpp tokens/s of a GGUF on the same random token ids, whatever the file."""

from __future__ import annotations

from pathlib import Path

import pytest

from bird_bone.eval.llamacpp import throughput
from bird_bone.export.gguf import write_gguf


def test_throughput_times_prompt_and_generation_of_a_tiny_gguf(tmp_path, tiny_model, tiny_tokenizer):
    path = write_gguf(tiny_model, tiny_tokenizer, tmp_path / "tiny.gguf", "F32").path
    speed = throughput(path, prompt_tokens=12, gen_tokens=5, threads=1)
    assert speed["prompt_tokens"] == 12 and speed["decode_tokens"] == 5 and speed["threads"] == 1
    assert speed["prompt_tokens_per_s"] > 0 and speed["decode_tokens_per_s"] > 0
    assert speed["bytes"] == Path(path).stat().st_size
    with pytest.raises(ValueError, match="gen_tokens"):
        throughput(path, prompt_tokens=12, gen_tokens=0)
