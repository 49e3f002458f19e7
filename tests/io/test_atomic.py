import hashlib

import pytest

from bird_bone.io.atomic import atomic_directory, atomic_file, atomic_write_text, sha256_file


def test_atomic_write_replaces_whole_file(tmp_path):
    target = tmp_path / "a" / "out.json"
    atomic_write_text(target, "first")
    atomic_write_text(target, "second")
    assert target.read_text() == "second"
    assert [p.name for p in target.parent.iterdir()] == ["out.json"]  # no temp files left


def test_failed_write_keeps_old_file_and_leaves_no_temp(tmp_path):
    target = tmp_path / "out.txt"
    atomic_write_text(target, "old")
    with pytest.raises(RuntimeError), atomic_file(target, "w") as handle:
        handle.write("half a fi")
        raise RuntimeError("killed")
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.txt"]


def test_atomic_directory_swaps_only_when_complete(tmp_path):
    target = tmp_path / "ckpt"
    with atomic_directory(target) as tmp:
        (tmp / "w.bin").write_bytes(b"v1")
    with pytest.raises(KeyboardInterrupt), atomic_directory(target) as tmp:
        (tmp / "w.bin").write_bytes(b"v2-partial")
        raise KeyboardInterrupt
    assert (target / "w.bin").read_bytes() == b"v1"
    with atomic_directory(target) as tmp:
        (tmp / "w.bin").write_bytes(b"v2")
    assert (target / "w.bin").read_bytes() == b"v2"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]


def test_sha256_file_matches_hashlib(tmp_path):
    path = tmp_path / "f"
    path.write_bytes(b"bird-bone" * 1000)
    assert sha256_file(path, chunk_size=7) == hashlib.sha256(b"bird-bone" * 1000).hexdigest()
