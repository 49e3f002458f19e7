"""The ``novaq`` tool and every script in scripts/ end a user's error with one line naming the file
and a non-zero exit, the traceback only with --verbose (issue 17 item 1, NOVAQ CLI and scripts)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.conftest import ROOT


def run(script: str, *args: str) -> subprocess.CompletedProcess:
    env = {"PYTHONPATH": str(ROOT / "src"), "PATH": "/usr/bin:/bin", "HOME": "/tmp"}
    cmd = [sys.executable, str(ROOT / "scripts" / script), *args]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)


@pytest.mark.parametrize(
    ("script", "args", "expected"),
    [
        ("diff_bundle.py", ["--repo", "{tmp}/missing"], "{tmp}/missing"),
        ("diff_bundle.py", ["--repo", "{tmp}"], "not a git repository"),
        ("weight_manifest.py", ["--root", "{tmp}", "--manifest", "{tmp}/bad.json", "--check"], "bad.json is not valid"),
        ("weight_manifest.py", ["--root", "{tmp}", "--manifest", "{tmp}/list.json", "--check"], "list.json is not a"),
        ("export_gguf.py", ["--ckpt", "{tmp}/none", "--out", "{tmp}/x.gguf"], "{tmp}/none"),
    ],
)
def test_script_errors_are_one_line(tmp_path, script, args, expected):
    (tmp_path / "bad.json").write_text("{bad")
    (tmp_path / "list.json").write_text("[1, 2]")
    args = [a.format(tmp=tmp_path) for a in args]
    result = run(script, *args)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 1 and len(lines) == 1, result.stderr
    assert lines[0].startswith(f"{script.removesuffix('.py')}: error: ") and expected.format(tmp=tmp_path) in lines[0]
    verbose = run(script, *args, "--verbose")
    assert verbose.returncode == 1 and "Traceback" in verbose.stderr
