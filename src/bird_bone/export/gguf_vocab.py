"""Tokenizer metadata of a GGUF file for a GPT-2 style byte-level BPE tokenizer (SmolLM2, Llama 3,
Qwen...) or a SentencePiece tokenizer (Gemma, Llama 2, Phi-3: a BPE with byte fallback in transformers).

What llama.cpp reads (``tokenizer.ggml.*``): the model ("gpt2"), the pre-tokenizer type, the tokens
in id order, their types, the merges, the special token ids, add_bos/add_eos and the chat template.
The ``gguf`` package's ``SpecialVocab`` reads merges, special ids and the chat template from a saved
tokenizer directory; written here is what it leaves to the caller: the token list with types and the
pre-tokenizer type. llama.cpp's converter finds the latter by hashing the tokenization of a probe
text; we match the tokenizer's declared pre-tokenizer structure instead, against the two structures
whose llama.cpp regex is the same split (see ``PRE_TOKENIZERS``), and take an explicit name otherwise.
"""

from __future__ import annotations

import json
import tempfile

from bird_bone.errors import ArtifactError

# tokenizers' pre_tokenizer JSON (normalised, see _pre_tokenizer_shape) -> llama.cpp's pre-tokenizer type.
# "gpt-2": the GPT-2 regex alone; "smollm": each digit split off first, then the GPT-2 regex.
# "qwen2" / "llama-bpe": the regex of Qwen2's / Llama 3's tokenizer.json (digits alone / in threes).
_WORDS = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|"
_REST = r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
PRE_TOKENIZERS = {
    ("ByteLevel",): "gpt-2",
    ("Digits(individual)", "ByteLevel"): "smollm",
    (f"Split({_WORDS}\\p{{N}}{_REST})", "ByteLevel(no regex)"): "qwen2",
    (f"Split({_WORDS}\\p{{N}}{{1,3}}{_REST})", "ByteLevel(no regex)"): "llama-bpe",
}


def _pre_tokenizer_shape(spec: dict | None) -> tuple[str, ...]:
    if spec is None:
        return ()
    if spec["type"] == "Sequence":
        return tuple(s for part in spec["pretokenizers"] for s in _pre_tokenizer_shape(part))
    if spec["type"] == "ByteLevel":
        return ("ByteLevel",) if spec.get("use_regex", True) else ("ByteLevel(no regex)",)
    if spec["type"] == "Split" and "Regex" in spec.get("pattern", {}):
        return (f"Split({spec['pattern']['Regex']})",)
    if spec["type"] == "Digits":
        return ("Digits(individual)" if spec.get("individual_digits") else "Digits",)
    return (spec["type"],)


def backend_spec(tokenizer) -> dict:
    """The tokenizers JSON of a fast tokenizer; a clear error for anything else."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        raise ArtifactError(
            f"tokenizer {type(tokenizer).__name__} is not a fast (tokenizers) tokenizer: GGUF export needs one"
        )
    return json.loads(backend.to_str())


def pre_tokenizer_type(tokenizer, override: str | None = None) -> str:
    """llama.cpp's ``tokenizer.ggml.pre`` for ``tokenizer`` (or ``override`` when given)."""
    if override:
        return override
    shape = _pre_tokenizer_shape(backend_spec(tokenizer).get("pre_tokenizer"))
    if shape not in PRE_TOKENIZERS:
        raise ArtifactError(
            f"tokenizer pre-tokenizer {' + '.join(shape) or 'none'} has no known llama.cpp equivalent "
            f"(known: {sorted(PRE_TOKENIZERS.values())}); pass pre_tokenizer='<llama.cpp name>' to choose one"
        )
    return PRE_TOKENIZERS[shape]


def token_list(tokenizer, vocab_size: int) -> tuple[list[str], list[int]]:
    """Tokens in id order padded to ``vocab_size`` and their gguf.TokenType, as llama.cpp's converter
    types them: added special tokens CONTROL, other added tokens USER_DEFINED, ids without a token UNUSED."""
    import gguf

    vocab = tokenizer.get_vocab()
    if vocab and max(vocab.values()) >= vocab_size:
        raise ArtifactError(f"tokenizer has token id {max(vocab.values())} >= the model's vocab_size {vocab_size}")
    by_id = {i: token for token, i in vocab.items()}
    added = tokenizer.added_tokens_decoder  # id -> AddedToken
    tokens, types = [], []
    for i in range(vocab_size):
        if i not in by_id:
            tokens.append(f"[PAD{i}]")
            types.append(gguf.TokenType.UNUSED)
        elif i in added:
            looks_special = by_id[i].startswith("<|") and by_id[i].endswith("|>")
            tokens.append(by_id[i])
            types.append(gguf.TokenType.CONTROL if added[i].special or looks_special else gguf.TokenType.USER_DEFINED)
        else:
            tokens.append(by_id[i])
            types.append(gguf.TokenType.NORMAL)
    return tokens, types


def add_vocab(writer, tokenizer, vocab_size: int, pre_tokenizer: str | None = None) -> dict:
    """Write the ``tokenizer.ggml.*`` keys of ``tokenizer``; returns a summary for the export report."""
    import gguf

    spec = backend_spec(tokenizer)
    model = spec["model"]
    if model.get("type") == "BPE" and model.get("byte_fallback"):
        return add_sentencepiece_vocab(writer, tokenizer, spec, vocab_size)
    if model.get("type") != "BPE":
        raise ArtifactError(
            f"tokenizer model {model.get('type')!r} is not supported: GGUF export writes GPT-2 style BPE tokenizers"
        )
    pre = pre_tokenizer_type(tokenizer, pre_tokenizer)
    tokens, types = token_list(tokenizer, vocab_size)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(pre)
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    with tempfile.TemporaryDirectory(prefix="bird_bone_tokenizer_") as tmp:
        tokenizer.save_pretrained(tmp)
        special = gguf.SpecialVocab(tmp, load_merges=True, n_vocab=vocab_size)
    if not special.merges:
        raise ArtifactError("tokenizer has no BPE merges: llama.cpp cannot tokenize with it")
    bos = tokenizer("a", add_special_tokens=True)["input_ids"]
    special.add_special_token["bos"] = tokenizer.bos_token_id is not None and bos[:1] == [tokenizer.bos_token_id]
    special.add_special_token["eos"] = tokenizer.eos_token_id is not None and bos[-1:] == [tokenizer.eos_token_id]
    special.add_to_gguf(writer, quiet=True)
    return {"model": "gpt2", "pre": pre, "tokens": len(tokens), "merges": len(special.merges)}


def sentencepiece_scores(spec: dict, tokens: list[str]) -> list[float]:
    """Each token's score for llama.cpp's SentencePiece tokenizer, which merges the adjacent pair whose
    merged piece scores highest: minus (1 + the rank of the first merge that makes the piece), so it
    merges in transformers' merge order; 0 for single characters, -1e9 for pieces no merge makes."""
    rank: dict[str, int] = {}
    for i, merge in enumerate(spec["model"]["merges"]):
        a, b = merge.split(" ", 1) if isinstance(merge, str) else merge
        rank.setdefault(a + b, i)
    return [-(rank[t] + 1.0) if t in rank else (0.0 if len(t) == 1 else -1e9) for t in tokens]


def _adds_space_prefix(spec: dict) -> bool:
    parts = [spec.get("normalizer") or {}, spec.get("pre_tokenizer") or {}]
    flat = [q for p in parts for q in (p.get("normalizers") or p.get("pretokenizers") or [p])]
    return any(
        (q.get("type") == "Prepend" and q.get("prepend") == "\u2581")
        or (q.get("type") == "Metaspace" and q.get("prepend_scheme", "always") != "never")
        for q in flat
    )


def add_sentencepiece_vocab(writer, tokenizer, spec: dict, vocab_size: int) -> dict:
    """The ``tokenizer.ggml.*`` keys of a SentencePiece tokenizer (llama.cpp's ``llama`` model)."""
    import gguf

    tokens, types = token_list(tokenizer, vocab_size)
    types = [
        gguf.TokenType.BYTE if len(t) == 6 and t.startswith("<0x") and t.endswith(">") else k
        for t, k in zip(tokens, types)
    ]
    writer.add_tokenizer_model("llama")
    writer.add_tokenizer_pre("default")
    writer.add_token_list(tokens)
    writer.add_token_scores(sentencepiece_scores(spec, tokens))
    writer.add_token_types(types)
    writer.add_add_space_prefix(_adds_space_prefix(spec))
    with tempfile.TemporaryDirectory(prefix="bird_bone_tokenizer_") as tmp:
        tokenizer.save_pretrained(tmp)
        special = gguf.SpecialVocab(tmp, load_merges=False, n_vocab=vocab_size)
    ids = tokenizer("a", add_special_tokens=True)["input_ids"]
    special.add_special_token["bos"] = tokenizer.bos_token_id is not None and ids[:1] == [tokenizer.bos_token_id]
    special.add_special_token["eos"] = tokenizer.eos_token_id is not None and ids[-1:] == [tokenizer.eos_token_id]
    special.add_to_gguf(writer, quiet=True)
    return {"model": "llama", "pre": "default", "tokens": len(tokens), "merges": len(spec["model"]["merges"])}
