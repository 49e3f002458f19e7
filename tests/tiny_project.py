"""A throw-away copy of the project that the real `kedro`, `dvc` and notebook kernels can run: the
project's pyproject and conf/, with parameters pointing at a tiny random LLaMA saved as a Hugging Face
directory and a tiny text file, so a whole run takes seconds and never touches a hub."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from tests.conftest import ROOT, TINY_TEXT, make_tiny_llama, make_tiny_tokenizer

# Parameters of a run on the tiny model (merged over conf/base/parameters*.yml).
TINY_PARAMS = {
    "parameters.yml": {
        "model": {"source": "tiny"},
        "data": {
            "evaluation": {"source": "text.txt", "fallback": None},
            "calibration": {"source": "text.txt", "fallback": None, "windows": 4, "window_length": 16, "batch_size": 2},
        },
        "eval": {"windows": 2, "window_length": 16, "batch_size": 2, "throughput_batches": 1, "tasks": []},
    },
    "parameters_prune.yml": {
        "prune": {
            "waves": 2,
            "structured": {"clusters": 2, "pattern_tokens": 16, "fraction": 0.25, "max_fraction_per_cluster": 0.5},
        }
    },
    # two heal steps on short windows keep a whole loop of two waves within seconds
    "parameters_heal.yml": {
        "heal": {"steps": 2, "window_length": 8, "batch_size": 2},
        "regrow": {"windows": 2, "batch_size": 2},
    },
    "parameters_novaq.yml": {
        "novaq": {"kmeans_samples": 256, "refine": {"max_iterations": 2, "calibration_windows": 2, "window_length": 16}}
    },
}


def merge(base: dict, override: dict) -> dict:
    out = dict(base)
    for key, value in override.items():
        out[key] = merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def write_tiny_project(root: Path) -> Path:
    """Copy pyproject.toml and conf/ into ``root``, save the tiny model and text, point the parameters at them."""
    root.mkdir(parents=True, exist_ok=True)
    shutil.copy(ROOT / "pyproject.toml", root)
    shutil.copytree(ROOT / "conf", root / "conf", ignore=shutil.ignore_patterns("local"))
    (root / "conf" / "local").mkdir()
    (root / "src").mkdir(exist_ok=True)  # bird_bone itself comes from PYTHONPATH / the editable install
    from bird_bone.io.checkpoint import Checkpoint, save_checkpoint

    tokenizer = make_tiny_tokenizer()
    save_checkpoint(Checkpoint(make_tiny_llama(len(tokenizer)), tokenizer), root / "tiny")
    (root / "text.txt").write_text(TINY_TEXT)
    for name, override in TINY_PARAMS.items():
        path = root / "conf" / "base" / name
        path.write_text(yaml.safe_dump(merge(yaml.safe_load(path.read_text()), override), sort_keys=False))
    return root


def tool_env(**extra: str) -> dict[str, str]:
    """Environment for subprocesses: this checkout's src/ first on PYTHONPATH, the venv's bin/ on PATH."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT / "src"), str(ROOT), env.get("PYTHONPATH")]))
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env.update(KEDRO_DISABLE_TELEMETRY="true", DO_NOT_TRACK="1", HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    env.update(extra)
    return env


def run_tool(cwd: Path, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run a command in ``cwd`` with tool_env(); a failure raises with its output."""
    done = subprocess.run(args, cwd=cwd, env=tool_env(), capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0:
        raise AssertionError(
            f"{' '.join(args)} failed ({done.returncode}):\n{done.stdout[-4000:]}\n{done.stderr[-4000:]}"
        )
    return done
