"""Reading and validating NOVAQ directories (format: docs/novaq-format.md, writer: novaq_format.py).

Order of checks, each failing with one :class:`NovaqFormatError` line naming the file or field: the
manifest parses and matches the schema (``novaq_schema``: every field typed and bounded) and, from
version 3, its own SHA-256 seal; every path it names is a relative path that stays inside the
directory (no ``..``, no absolute path, no symlink out); every file has its recorded size
(truncation) and SHA-256 (any flipped byte), and the shard and tokenizer folders hold no unlisted
file; the model's parameter shapes (built on the meta device, nothing allocated) match the
manifest, and the manifest matches the shards' tensors; only then is the model allocated and the
weights decoded, and :func:`validate_novaq` compares its logits with the recorded ones.
"""

from __future__ import annotations

import json
from pathlib import Path, PurePosixPath

import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_bytes
from torch import nn

from bird_bone.export.novaq_codec import check_entry, decode_tensor
from bird_bone.export.novaq_schema import (
    MANIFEST,
    VERIFY_ATOL,
    VERIFY_TOP_K,
    DenseEntry,
    Manifest,
    NovaqFormatError,
    parse_manifest,
)
from bird_bone.io.atomic import sha256_file

DEFAULT_PROMPTS = ("The capital of France is", "Bones grow where they are loaded and", "def add(a, b):")
LAYER_KEYS = ("num_hidden_layers", "n_layer", "num_layers")
SIZE_KEYS = ("vocab_size", "hidden_size", "intermediate_size", "num_attention_heads", "num_key_value_heads", "head_dim")


def load_manifest(path: str | Path) -> tuple[Path, dict]:
    """(directory, manifest) after checking the manifest against the schema (and its seal)."""
    return _load(path)[:2]


def _load(path: str | Path) -> tuple[Path, dict, Manifest]:
    root = Path(path)
    if root.is_file() and root.name == MANIFEST:
        root = root.parent
    manifest_path = root / MANIFEST
    if not manifest_path.is_file():
        raise NovaqFormatError(f"{root} is not a NOVAQ directory: {MANIFEST} is missing")
    try:
        text = manifest_path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise NovaqFormatError(f"{manifest_path} is not valid UTF-8: {exc}") from None
    raw, model = parse_manifest(text, str(manifest_path))
    return root, raw, model


def safe_path(root: Path, relative: object, field: str) -> Path:
    """``root / relative`` if it is a plain relative path that stays inside ``root``."""
    if not isinstance(relative, str) or not relative or "\\" in relative or "\x00" in relative:
        raise NovaqFormatError(f"{root / MANIFEST}: {field} is not a valid relative path: {relative!r}")
    pure = PurePosixPath(relative)
    if pure.is_absolute() or ".." in pure.parts:
        raise NovaqFormatError(f"{root / MANIFEST}: {field} = {relative!r} points outside {root}")
    if len(relative) > 1024 or any(len(part) > 255 for part in pure.parts):
        raise NovaqFormatError(f"{root / MANIFEST}: {field} is too long a path: {relative[:40]!r}...")
    try:
        resolved = (root / pure).resolve()
    except (OSError, RuntimeError) as exc:  # a symlink loop, an unreadable folder
        raise NovaqFormatError(f"{root / MANIFEST}: {field} = {relative!r} cannot be resolved ({exc})") from None
    if not resolved.is_relative_to(root.resolve()):
        raise NovaqFormatError(f"{root / MANIFEST}: {field} = {relative!r} points outside {root} (symlink?)")
    return resolved


def verify_files(root: Path, manifest: dict) -> None:
    """Every listed file exists with its recorded size and SHA-256; the shard and tokenizer
    directories hold no file the manifest does not list (the reader would read it unchecked)."""
    for name, record in manifest["files"].items():
        path = safe_path(root, name, f"files[{name!r}]")
        if not path.is_file():
            raise NovaqFormatError(f"{root}: file {name} listed in the manifest is missing")
        size = path.stat().st_size
        if size != record["bytes"]:
            raise NovaqFormatError(f"{path}: {size} bytes, manifest records {record['bytes']} (truncated?)")
        if sha256_file(path) != record["sha256"]:
            raise NovaqFormatError(f"{path}: SHA-256 mismatch (the file is corrupt or was modified)")
    folders = {"shards"} | ({manifest["tokenizer"]} if manifest.get("tokenizer") else set())
    for folder in sorted(folders):
        base = safe_path(root, folder, "tokenizer" if folder != "shards" else "shards")
        for path in sorted(base.rglob("*")) if base.is_dir() else []:
            if path.is_file() and path.relative_to(root.resolve()).as_posix() not in manifest["files"]:
                raise NovaqFormatError(f"{path}: file not listed in the manifest (remove it, or rewrite the file)")


def _load_shard(root: Path, name: str) -> dict[str, torch.Tensor]:
    path = safe_path(root, name, "shard")
    try:
        return load_bytes(path.read_bytes())
    except (SafetensorError, ValueError, RuntimeError, OverflowError) as exc:
        raise NovaqFormatError(f"{path} is not a valid safetensors shard: {exc}") from None


def _check_sizes(root: Path, config: dict, manifest: Manifest) -> None:
    """Layer counts and widths of the config no larger than the tensors can hold (cheap, before any
    model is built: a width of 10**12 must not reach transformers)."""
    widest = max(max(entry.shape) for entry in manifest.tensors.values())
    for key, bound in [*((k, len(manifest.tensors)) for k in LAYER_KEYS), *((k, widest) for k in SIZE_KEYS)]:
        value = config.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or not 0 < value <= bound):
            raise NovaqFormatError(f"{root / MANIFEST}: field model.config.{key} = {value!r} does not fit the tensors")


def _skeleton(root: Path, manifest: dict, checked: Manifest):
    """(transformers config, model on the meta device): the parameter shapes, nothing allocated."""
    from transformers import AutoConfig, AutoModelForCausalLM

    config_dict = dict(manifest["model"]["config"])
    _check_sizes(root, config_dict, checked)
    try:
        config = AutoConfig.for_model(**config_dict)
        with torch.device("meta"):
            skeleton = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    except Exception as exc:  # noqa: BLE001 - transformers raises many kinds on a bad config
        message = " ".join(str(exc).split())[:300]
        raise NovaqFormatError(f"{root / MANIFEST}: field model.config cannot build a model ({message})") from None
    return config, skeleton


def _check_shapes(root: Path, manifest: Manifest, skeleton) -> None:
    expected = {name: list(p.shape) for name, p in skeleton.named_parameters()}
    unknown = sorted(set(manifest.tensors) - set(expected))
    missing = sorted(set(expected) - set(manifest.tensors))
    if unknown or missing:
        raise NovaqFormatError(f"{root}: tensors do not match the model (unknown {unknown[:3]}, missing {missing[:3]})")
    for name, entry in manifest.tensors.items():
        if list(entry.shape) != expected[name]:
            raise NovaqFormatError(f"tensor {name}: shape {list(entry.shape)} != model's {expected[name]}")


def build_model(root: Path, manifest: dict, checked: Manifest | None = None) -> nn.Module:
    """A transformers model with the decoded (dense float32) weights. Every entry is checked
    against its shard, and every shape against the model's, before the model is allocated."""
    from transformers import AutoModelForCausalLM

    checked = checked or Manifest.model_validate_json(json.dumps(manifest))
    shards = {name: _load_shard(root, name) for name in sorted({e.shard for e in checked.tensors.values()})}
    for name, entry in checked.tensors.items():
        check_entry(name, entry, shards[entry.shard])
    config, skeleton = _skeleton(root, manifest, checked)
    _check_shapes(root, checked, skeleton)
    del skeleton
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    params = dict(model.named_parameters())
    with torch.no_grad():
        for name, entry in checked.tensors.items():
            shard = shards[entry.shard]
            tensor = shard[name].float() if isinstance(entry, DenseEntry) else decode_tensor(name, entry, shard)
            if not torch.isfinite(tensor).all():
                raise NovaqFormatError(f"tensor {name}: holds non-finite values")
            params[name].copy_(tensor)
    return model.eval()


def read_novaq(path: str | Path):
    """(model, tokenizer, manifest) from a NOVAQ directory, after every check (schema, seal, sizes,
    hashes, unlisted files, shapes)."""
    root, manifest, checked = _load(path)
    verify_files(root, manifest)
    model = build_model(root, manifest, checked)
    tokenizer = None
    if manifest.get("tokenizer"):
        from transformers import AutoTokenizer

        tok_dir = safe_path(root, manifest["tokenizer"], "tokenizer")
        try:
            tokenizer = AutoTokenizer.from_pretrained(tok_dir)
        except (OSError, ValueError, TypeError, KeyError) as exc:
            raise NovaqFormatError(f"{tok_dir}: the tokenizer cannot be loaded ({exc})") from None
    return model, tokenizer, manifest


@torch.inference_mode()
def reference_logits(model: nn.Module, tokenizer, prompts=DEFAULT_PROMPTS) -> dict:
    """Top-k logits (values and token ids) and logsumexp at every position of each prompt."""
    records = []
    for prompt in prompts:
        if tokenizer is not None:
            ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        else:
            ids = [ord(c) % model.config.vocab_size for c in prompt]
        logits = model(input_ids=torch.tensor([ids]), use_cache=False).logits[0].float()
        top = logits.topk(min(VERIFY_TOP_K, logits.shape[-1]), dim=-1)
        records.append({
            "prompt": prompt, "input_ids": ids, "top_ids": top.indices.tolist(),
            "top_logits": top.values.tolist(), "logsumexp": torch.logsumexp(logits, -1).tolist(),
        })  # fmt: skip
    return {"prompts": records}


def _prompt_difference(model: nn.Module, rec: dict, vocab: int, path) -> float:
    if max(rec["input_ids"]) >= vocab or max(max(r) for r in rec["top_ids"]) >= vocab:
        raise NovaqFormatError(f"{path}: verification prompt {rec['prompt']!r} holds a token id >= {vocab}")
    try:
        logits = model(input_ids=torch.tensor([rec["input_ids"]]), use_cache=False, return_dict=True).logits[0]
    except Exception as exc:  # noqa: BLE001 - the forward runs on a config read from the file
        message = " ".join(str(exc).split())[:200] or type(exc).__name__
        raise NovaqFormatError(f"{path}: the model of field model.config does not run ({message})") from None
    logits = logits.float()
    got = torch.gather(logits, 1, torch.tensor(rec["top_ids"]))
    return max(
        float((got - torch.tensor(rec["top_logits"])).abs().max()),
        float((torch.logsumexp(logits, -1) - torch.tensor(rec["logsumexp"])).abs().max()),
    )


def verify_logits(model: nn.Module, manifest: dict, path) -> float:
    """The largest difference between ``model``'s logits and the recorded ones; more than the
    reader's :data:`VERIFY_ATOL` on any prompt fails."""
    records = (manifest.get("verification") or {}).get("prompts") or []
    if not records:
        raise NovaqFormatError(f"{path}: manifest has no verification logits")
    worst, vocab = 0.0, model.get_output_embeddings().weight.shape[0]
    with torch.inference_mode():
        for rec in records:
            diff = _prompt_difference(model, rec, vocab, path)
            worst = max(worst, diff)
            if not diff <= VERIFY_ATOL:
                raise NovaqFormatError(
                    f"{path}: logits for prompt {rec['prompt']!r} differ from the recorded ones by {diff:.3g} "
                    f"> {VERIFY_ATOL}"
                )
    return worst


def validate_novaq(path: str | Path) -> dict:
    """Full check: every check of :func:`read_novaq`, then the logits; returns a summary."""
    model, _, manifest = read_novaq(path)
    worst = verify_logits(model, manifest, path)
    return {
        "path": str(path),
        "files": len(manifest["files"]),
        "tensors": len(manifest["tensors"]),
        "prompts": len(manifest["verification"]["prompts"]),
        "max_logit_difference": worst,
    }


__all__ = [
    "build_model",
    "load_manifest",
    "read_novaq",
    "reference_logits",
    "safe_path",
    "validate_novaq",
    "verify_files",
    "verify_logits",
]
