"""Read a run's files from a git revision (git-tracked files from git, DVC-tracked outputs from the
local DVC cache, through dvc's own DVCFileSystem) or from a run directory on disk."""

from __future__ import annotations

import io
import subprocess
from pathlib import Path


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True, check=True).stdout


class RevisionFiles:
    """Files as they were at ``rev``: a file whose DVC cache entry is absent reads as None."""

    def __init__(self, repo: Path, rev: str):
        self.repo, self.rev = Path(repo), rev
        self._fs = None
        if (self.repo / ".dvc").is_dir():
            from dvc.api import DVCFileSystem

            self._fs = DVCFileSystem(str(self.repo), rev=rev)

    def read(self, path: str) -> bytes | None:
        if self._fs is not None:
            try:
                return self._fs.read_bytes(path)
            except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
                return None
        try:
            return subprocess.run(
                ["git", "show", f"{self.rev}:{path}"], cwd=self.repo, capture_output=True, check=True
            ).stdout
        except subprocess.CalledProcessError:
            return None

    def digest(self, path: str) -> str | None:
        """DVC's MD5 of a DVC-tracked file (from dvc.lock, no read); None for anything else."""
        if self._fs is None:
            return None
        try:
            return self._fs.info(path).get("md5")
        except FileNotFoundError:
            return None

    def open(self, path: str):
        if self._fs is not None:
            return self._fs.open(path, "rb")
        return io.BytesIO(self.read(path) or b"")

    def find(self, directory: str, suffix: str) -> list[str]:
        if self._fs is not None:
            try:
                found = self._fs.find(directory)
            except FileNotFoundError:
                return []
        else:
            found = git(self.repo, "ls-tree", "-r", "--name-only", self.rev, "--", directory).split()
        return sorted(p.lstrip("/") for p in found if p.endswith(suffix))


class DirectoryFiles:
    """Files of a run directory on disk (a Kedro project after `kedro run`)."""

    def __init__(self, root: Path):
        self.root = Path(root)

    def read(self, path: str) -> bytes | None:
        file = self.root / path
        return file.read_bytes() if file.is_file() else None

    def digest(self, path: str) -> None:
        return None

    def open(self, path: str):
        return open(self.root / path, "rb")

    def find(self, directory: str, suffix: str) -> list[str]:
        base = self.root / directory
        return sorted(p.relative_to(self.root).as_posix() for p in base.rglob(f"*{suffix}") if p.is_file())
