"""What changed between two runs or two revisions, as plain data: parameters and configs (flattened
keys), numeric metrics, per-tensor SHA-256 and per-layer mask counts. Pure functions over dicts,
bytes and numpy arrays; the bundle writer feeds them."""

from __future__ import annotations

import hashlib
import json
import struct

import numpy as np


def flatten(tree, prefix: str = "") -> dict:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}``; lists are leaves."""
    if not isinstance(tree, dict):
        return {prefix: tree} if prefix else {}
    out = {}
    for key, value in tree.items():
        out.update(flatten(value, f"{prefix}.{key}" if prefix else str(key)))
    return out


def diff_values(old: dict, new: dict) -> list[dict]:
    """Changed, added and removed keys of two flat dicts: ``[{key, old, new}]`` (missing side is None)."""
    keys = sorted(set(old) | set(new))
    return [{"key": k, "old": old.get(k), "new": new.get(k)} for k in keys if old.get(k) != new.get(k)]


def diff_metrics(old: dict, new: dict) -> list[dict]:
    """Numeric leaves that differ, with ``diff = new - old`` when both sides exist."""
    numeric = (
        {k: v for k, v in flatten(old).items() if _is_number(v)},
        {k: v for k, v in flatten(new).items() if _is_number(v)},
    )
    rows = diff_values(*numeric)
    for row in rows:
        row["diff"] = row["new"] - row["old"] if None not in (row["old"], row["new"]) else None
    return rows


def _is_number(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def safetensors_tensor_sha256(data: bytes) -> dict[str, str]:
    """SHA-256 of each tensor's raw bytes in a safetensors file, read from its header offsets.

    Equal to bird_bone.seeding.fingerprint.tensor_sha256 of the loaded tensor (both hash the contiguous
    little-endian bytes), so checkpoints and seed.json files compare directly without loading torch.
    """
    (length,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + length])
    start = 8 + length
    return {
        name: hashlib.sha256(data[start + entry["data_offsets"][0] : start + entry["data_offsets"][1]]).hexdigest()
        for name, entry in sorted(header.items())
        if name != "__metadata__"
    }


def safetensors_tensor_names(handle) -> list[str]:
    """Tensor names from the header of an open safetensors file (reads the header only)."""
    (length,) = struct.unpack("<Q", handle.read(8))
    return sorted(name for name in json.loads(handle.read(length)) if name != "__metadata__")


def diff_tensor_hashes(old: dict[str, str], new: dict[str, str]) -> dict[str, list[str]]:
    """Tensor names whose SHA-256 changed, that were added, removed or stayed the same."""
    return {
        "changed": sorted(n for n in old.keys() & new.keys() if old[n] != new[n]),
        "added": sorted(new.keys() - old.keys()),
        "removed": sorted(old.keys() - new.keys()),
        "unchanged": sorted(n for n in old.keys() & new.keys() if old[n] == new[n]),
    }


def mask_changes(old: dict[str, np.ndarray], new: dict[str, np.ndarray]) -> dict[str, dict]:
    """Per layer, weights newly pruned (kept in ``old``, pruned in ``new``) and regrown (the reverse).

    Masks are True where a weight is pruned. A layer whose shape changed (structured pruning) is
    reported with both shapes and no counts; a layer on one side only is reported as added/removed.
    """
    out = {}
    for name in sorted(old.keys() | new.keys()):
        a, b = old.get(name), new.get(name)
        if a is None or b is None:
            out[name] = {"status": "added" if a is None else "removed"}
        elif a.shape != b.shape:
            out[name] = {"status": "reshaped", "old_shape": list(a.shape), "new_shape": list(b.shape)}
        else:
            a, b = a.astype(bool), b.astype(bool)
            out[name] = {
                "status": "same" if np.array_equal(a, b) else "changed",
                "weights": int(a.size),
                "pruned_before": int(a.sum()),
                "pruned_after": int(b.sum()),
                "newly_pruned": int((b & ~a).sum()),
                "regrown": int((a & ~b).sum()),
            }
    return out
