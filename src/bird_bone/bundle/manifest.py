"""Weight manifest: SHA-256 and size of every weight file of a run, kept in a small tracked JSON file
(`weights.manifest.json`) so that git history says which weights each commit was made with, while the
weights themselves stay in DVC. Files that are absent locally (not pulled) keep their recorded entry."""

from __future__ import annotations

import json
from pathlib import Path

from bird_bone.io.atomic import atomic_write_text, sha256_file

WEIGHT_PATTERNS = ("models/**/*.safetensors", "models/**/*.gguf", "data/06_models/**/*.safetensors")
FORMAT = "bird-bone-weights"


def find_weight_files(root: Path, patterns: tuple[str, ...] = WEIGHT_PATTERNS) -> list[str]:
    """Paths (relative, POSIX) of weight files under ``root``; hidden files (atomic-write temporaries) skipped."""
    root = Path(root)
    found = {p.relative_to(root).as_posix() for pattern in patterns for p in root.glob(pattern) if p.is_file()}
    return sorted(p for p in found if not any(part.startswith(".") for part in Path(p).parts))


def build_manifest(root: Path, previous: dict | None = None, prune_missing: bool = False) -> dict:
    """Hash every weight file present; entries of ``previous`` whose file is absent are kept unless pruned."""
    root = Path(root)
    kept = {} if prune_missing or previous is None else previous.get("files", {})
    files = {p: e for p, e in kept.items() if not (root / p).exists()}  # not pulled here: keep the record
    for path in find_weight_files(root):
        files[path] = {"sha256": sha256_file(root / path), "bytes": (root / path).stat().st_size}
    return {"format": FORMAT, "version": 1, "files": dict(sorted(files.items()))}


def read_manifest(path: Path) -> dict | None:
    path = Path(path)
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path} is not valid JSON: {exc}") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        found = data.get("format") if isinstance(data, dict) else type(data).__name__
        raise ValueError(f"{path} is not a bird-bone weight manifest (format={found!r})")
    return data


def update_manifest(root: Path, manifest: Path, prune_missing: bool = False) -> bool:
    """Rewrite ``manifest`` when the weights under ``root`` changed; True when it did."""
    previous = read_manifest(manifest)
    current = build_manifest(root, previous, prune_missing)
    if previous == current:
        return False
    atomic_write_text(manifest, json.dumps(current, indent=1) + "\n")
    return True
