"""Reading and validating NOVAQ directories (format: docs/novaq-format.md, writer: novaq_format.py).

Order of checks, each failing with :class:`NovaqFormatError` naming the file or field: the manifest
parses and has this format and version; every path it names is a relative path that stays inside
the directory (no ``..``, no absolute path, no symlink out); every file has its recorded size
(truncation) and SHA-256 (any flipped byte); only then are the safetensors shards parsed and the
weights decoded into a transformers model, whose logits :func:`validate_novaq` compares with the
recorded reference logits.
"""

from __future__ import annotations

import json
from pathlib import Path, PurePosixPath

import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_bytes
from torch import nn

from bird_bone.export.novaq_format import (
    FORMAT,
    MANIFEST,
    SUPPORTED_VERSIONS,
    NovaqFormatError,
    decode_tensor,
    reference_logits,
)
from bird_bone.io.atomic import sha256_file


def load_manifest(path: str | Path) -> tuple[Path, dict]:
    """(directory, manifest) after checking the format name and version."""
    root = Path(path)
    if root.is_file() and root.name == MANIFEST:
        root = root.parent
    manifest_path = root / MANIFEST
    if not manifest_path.is_file():
        raise NovaqFormatError(f"{root} is not a NOVAQ directory: {MANIFEST} is missing")
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise NovaqFormatError(f"{manifest_path} is not valid JSON: {exc}") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise NovaqFormatError(f"{manifest_path}: field 'format' must be '{FORMAT}'")
    if manifest.get("format_version") not in SUPPORTED_VERSIONS:
        raise NovaqFormatError(
            f"{manifest_path}: format_version {manifest.get('format_version')!r} is not supported "
            f"(this reader handles {', '.join(map(str, SUPPORTED_VERSIONS))})"
        )
    for field in ("model", "tensors", "files"):
        if not isinstance(manifest.get(field), dict):
            raise NovaqFormatError(f"{manifest_path}: field '{field}' is missing or not an object")
    return root, manifest


def safe_path(root: Path, relative: object, field: str) -> Path:
    """``root / relative`` if it is a plain relative path that stays inside ``root``."""
    if not isinstance(relative, str) or not relative or "\\" in relative or "\x00" in relative:
        raise NovaqFormatError(f"{root / MANIFEST}: {field} is not a valid relative path: {relative!r}")
    pure = PurePosixPath(relative)
    if pure.is_absolute() or ".." in pure.parts:
        raise NovaqFormatError(f"{root / MANIFEST}: {field} = {relative!r} points outside {root}")
    resolved = (root / pure).resolve()
    if not resolved.is_relative_to(root.resolve()):
        raise NovaqFormatError(f"{root / MANIFEST}: {field} = {relative!r} points outside {root} (symlink?)")
    return resolved


def verify_files(root: Path, manifest: dict) -> None:
    """Every listed file exists with its recorded size and SHA-256; every shard used is listed."""
    for name, record in manifest["files"].items():
        path = safe_path(root, name, f"files[{name!r}]")
        if not path.is_file():
            raise NovaqFormatError(f"{root}: file {name} listed in the manifest is missing")
        size = path.stat().st_size
        if size != record.get("bytes"):
            raise NovaqFormatError(f"{path}: {size} bytes, manifest records {record.get('bytes')} (truncated?)")
        if sha256_file(path) != record.get("sha256"):
            raise NovaqFormatError(f"{path}: SHA-256 mismatch (the file is corrupt or was modified)")
    for name, entry in manifest["tensors"].items():
        shard = entry.get("shard") if isinstance(entry, dict) else None
        if shard not in manifest["files"]:
            safe_path(root, shard, f"tensors[{name!r}].shard")
            raise NovaqFormatError(f"{root / MANIFEST}: tensor {name} names shard {shard!r} that is not in 'files'")


def _load_shard(root: Path, name: str) -> dict[str, torch.Tensor]:
    path = safe_path(root, name, "shard")
    try:
        return load_bytes(path.read_bytes())
    except (SafetensorError, ValueError, RuntimeError) as exc:
        raise NovaqFormatError(f"{path} is not a valid safetensors shard: {exc}") from None


def build_model(root: Path, manifest: dict) -> nn.Module:
    """A transformers model with the decoded (dense float32) weights."""
    from transformers import AutoConfig, AutoModelForCausalLM

    try:
        config_dict = dict(manifest["model"]["config"])
        config = AutoConfig.for_model(**config_dict)
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    except (KeyError, ValueError, TypeError) as exc:
        raise NovaqFormatError(f"{root / MANIFEST}: field model.config cannot build a model ({exc})") from None
    shards: dict[str, dict] = {}
    state = {}
    for name, entry in manifest["tensors"].items():
        if not isinstance(entry, dict) or "shard" not in entry:
            raise NovaqFormatError(f"{root / MANIFEST}: tensors[{name!r}] has no 'shard'")
        if entry["shard"] not in shards:
            shards[entry["shard"]] = _load_shard(root, entry["shard"])
        shard = shards[entry["shard"]]
        if entry.get("encoding") == "dense":
            if name not in shard:
                raise NovaqFormatError(f"tensor {name}: missing from shard {entry['shard']}")
            state[name] = shard[name].float()
        elif entry.get("encoding") == "novaq-rvq2":
            state[name] = decode_tensor(name, entry, shard)
        else:
            raise NovaqFormatError(f"tensor {name}: unknown encoding {entry.get('encoding')!r}")
    expected = dict(model.named_parameters())
    unknown = sorted(set(state) - set(expected))
    missing = sorted(set(expected) - set(state))
    if unknown or missing:
        raise NovaqFormatError(f"{root}: tensors do not match the model (unknown {unknown[:3]}, missing {missing[:3]})")
    with torch.no_grad():
        for name, tensor in state.items():
            if tuple(tensor.shape) != tuple(expected[name].shape):
                raise NovaqFormatError(
                    f"tensor {name}: shape {tuple(tensor.shape)} != model's {tuple(expected[name].shape)}"
                )
            expected[name].copy_(tensor)
    return model.eval()


def read_novaq(path: str | Path, verify: bool = True):
    """(model, tokenizer, manifest) from a NOVAQ directory; ``verify`` checks sizes and hashes first."""
    root, manifest = load_manifest(path)
    if verify:
        verify_files(root, manifest)
    model = build_model(root, manifest)
    tokenizer = None
    if manifest.get("tokenizer"):
        from transformers import AutoTokenizer

        tok_dir = safe_path(root, manifest["tokenizer"], "tokenizer")
        tokenizer = AutoTokenizer.from_pretrained(tok_dir)
    return model, tokenizer, manifest


def validate_novaq(path: str | Path) -> dict:
    """Full check: hashes, decoding, and logits against the recorded reference; returns a summary."""
    model, tokenizer, manifest = read_novaq(path, verify=True)
    recorded = manifest.get("verification") or {}
    records = recorded.get("prompts") or []
    if not records:
        raise NovaqFormatError(f"{path}: manifest has no verification logits")
    atol = float(recorded.get("atol", 1e-2))
    worst = 0.0
    with torch.inference_mode():
        for rec in records:
            logits = model(input_ids=torch.tensor([rec["input_ids"]]), use_cache=False).logits[0].float()
            got = torch.gather(logits, 1, torch.tensor(rec["top_ids"]))
            diff = max(
                float((got - torch.tensor(rec["top_logits"])).abs().max()),
                float((torch.logsumexp(logits, -1) - torch.tensor(rec["logsumexp"])).abs().max()),
            )
            worst = max(worst, diff)
            if diff > atol:
                raise NovaqFormatError(
                    f"{path}: logits for prompt {rec['prompt']!r} differ from the recorded ones by {diff:.3g} > {atol}"
                )
    return {
        "path": str(path),
        "files": len(manifest["files"]),
        "tensors": len(manifest["tensors"]),
        "prompts": len(records),
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
]
