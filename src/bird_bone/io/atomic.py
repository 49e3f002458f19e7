"""Atomic writes: a file or directory appears whole under its final name, or not at all.

Every artifact bird-bone writes goes through here: the content is written to a temporary
sibling (same filesystem), flushed, then renamed over the target, so a killed run never
leaves half a file and an existing artifact is replaced only once the new one is complete.

A temporary's name carries its writer's process id (``.NAME.p<pid>.<random>.tmp``), so what a
killed writer left behind (``kill -9`` runs no cleanup) is recognised and removed by the next
write of the same target, or by :func:`remove_stale_temporaries` over a whole tree, while a
temporary that a live process is still writing is left alone.
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import math
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

_TEMP = re.compile(r"^\.(?P<name>.+)\.(?:p(?P<pid>\d+)\.[^.]*\.tmp|old-(?P<old>\d+))$")


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def _is_stale(path: Path) -> bool:
    """A temporary (or a moved-aside old directory) of a writer that no longer runs."""
    match = _TEMP.match(path.name)
    if match is None:
        return path.name.startswith(".") and path.name.endswith(".tmp")  # before pids were in the name
    return not _alive(int(match["pid"] or match["old"]))


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def _remove_stale_siblings(target: Path) -> None:
    for stale in target.parent.glob(f".{glob.escape(target.name)}.*"):
        if _TEMP.match(stale.name) or stale.name.endswith(".tmp"):
            if _is_stale(stale):
                _remove(stale)


def remove_stale_temporaries(root: str | os.PathLike) -> list[Path]:
    """Delete every temporary under ``root`` left by a killed writer; returns what was removed."""
    removed = []
    root = Path(root)
    if not root.is_dir():
        return removed
    for dirpath, dirnames, filenames in os.walk(root):
        for name in [*dirnames, *filenames]:
            path = Path(dirpath) / name
            if name.startswith(".") and (_TEMP.match(name) or name.endswith(".tmp")) and _is_stale(path):
                _remove(path)
                removed.append(path)
        dirnames[:] = [d for d in dirnames if (Path(dirpath) / d).exists()]
    return removed


def _prefix(target: Path) -> str:
    return f".{target.name}.p{os.getpid()}."


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary sibling path for a writer that opens files itself (GGUFWriter, llama.cpp);
    renamed onto ``target`` once the block succeeds, deleted otherwise."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_siblings(target)
    fd, tmp = tempfile.mkstemp(prefix=_prefix(target), suffix=".tmp", dir=target.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, target)
        _fsync_dir(target.parent)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def atomic_file(target: str | os.PathLike, mode: str = "wb") -> Iterator:
    """Open a temporary sibling of ``target`` for writing; rename it onto ``target`` on success."""
    with atomic_path(target) as tmp, open(tmp, mode) as handle:
        yield handle


def atomic_write_bytes(target: str | os.PathLike, data: bytes) -> None:
    with atomic_file(target, "wb") as handle:
        handle.write(data)


def atomic_write_text(target: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(target, text.encode("utf-8"))


@contextlib.contextmanager
def atomic_directory(target: str | os.PathLike) -> Iterator[Path]:
    """Yield an empty temporary directory; on success it replaces ``target`` in one rename.

    An existing ``target`` is moved aside first and deleted only after the new directory is
    in place, so at every instant either the old or the new complete directory exists.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_siblings(target)
    tmp = Path(tempfile.mkdtemp(prefix=_prefix(target), suffix=".tmp", dir=target.parent))
    try:
        yield tmp
        for child in tmp.iterdir():
            if child.is_file():
                with open(child, "rb") as handle:
                    os.fsync(handle.fileno())
        old = None
        if target.exists():
            old = target.with_name(f".{target.name}.old-{os.getpid()}")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(target, old)
        os.replace(tmp, target)
        _fsync_dir(target.parent)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def sha256_file(path: str | os.PathLike, chunk_size: int = 1 << 20) -> str:
    """Hex SHA-256 of a file's bytes, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(chunk_size), b""):
            digest.update(chunk)
    return digest.hexdigest()


def strict_json(data):
    """``data`` with every float NaN or infinity replaced by None, for strict JSON (RFC 8259)."""
    if isinstance(data, float):
        return data if math.isfinite(data) else None
    if isinstance(data, dict):
        return {key: strict_json(value) for key, value in data.items()}
    if isinstance(data, list | tuple):
        return [strict_json(value) for value in data]
    return data
