"""Diff bundles in temporary git repos: parameter, metric, tensor, mask and notebook changes between a
commit and its parent, read from git or from the DVC cache; release tags; the post-commit hook."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import numpy as np
import pytest
import torch
import yaml
from safetensors.numpy import save_file as save_masks
from safetensors.torch import save_file

from bird_bone.bundle.changes import mask_changes, safetensors_tensor_sha256
from bird_bone.bundle.sources import DirectoryFiles
from bird_bone.bundle.writer import write_bundle
from bird_bone.seeding.fingerprint import tensor_sha256
from tests.conftest import ROOT
from tests.tiny_project import tool_env

SCRIPT = ROOT / "scripts" / "diff_bundle.py"


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=repo, env=tool_env(), capture_output=True, text=True, check=True).stdout


def init_repo(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    git(path, "init", "-q")
    git(path, "config", "user.email", "test@bird-bone")
    git(path, "config", "user.name", "test")
    return path


def write_run(root: Path, sparsity: float, tensors: dict[str, torch.Tensor], waves: list[dict], perplexity: float):
    """The files a run leaves behind, small enough for git: params, metrics, seed.json, checkpoint, masks."""
    (root / "conf/base").mkdir(parents=True, exist_ok=True)
    (root / "conf/base/parameters_prune.yml").write_text(yaml.safe_dump({"prune": {"target_sparsity": sparsity}}))
    (root / "data/08_reporting").mkdir(parents=True, exist_ok=True)
    metrics = {"perplexity": perplexity, "sparsity": sparsity, "text": "wikitext"}
    (root / "data/08_reporting/pruned_metrics.json").write_text(json.dumps(metrics))
    seed = {"tensors": {n: {"sha256": tensor_sha256(t)} for n, t in tensors.items()}}
    (root / "data/02_intermediate").mkdir(parents=True, exist_ok=True)
    (root / "data/02_intermediate/seed.json").write_text(json.dumps(seed))
    (root / "models/pruned").mkdir(parents=True, exist_ok=True)
    save_file(tensors, root / "models/pruned/model.safetensors")
    masks = root / "data/06_models/masks"
    shutil.rmtree(masks, ignore_errors=True)
    masks.mkdir(parents=True)
    for k, wave in enumerate(waves, start=1):
        save_masks(wave, masks / f"wave_{k}.safetensors")


def notebook(source: str) -> str:
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_markdown_cell("# Run"), nbformat.v4.new_code_cell(source)]
    return nbformat.writes(nb)


def masks(pattern: list[int]) -> dict[str, np.ndarray]:
    return {"layers.0.q": np.array(pattern, dtype=bool).reshape(2, 4), "layers.0.k": np.zeros((2, 4), dtype=bool)}


WEIGHTS = {"layers.0.q": torch.arange(8.0).reshape(2, 4), "layers.0.k": torch.ones(2, 4)}


@pytest.fixture
def two_commits(tmp_path):
    """Commit 1: sparsity 0.25, one wave. Commit 2: sparsity 0.5, two waves (the second regrows one weight)."""
    repo = init_repo(tmp_path / "repo")
    write_run(repo, 0.25, WEIGHTS, [masks([1, 1, 0, 0, 0, 0, 0, 0])], perplexity=30.0)
    (repo / "notebooks").mkdir()
    (repo / "notebooks/resources.ipynb").write_text(notebook("print('bits')"))
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "first run")
    changed = {**WEIGHTS, "layers.0.q": torch.arange(8.0).reshape(2, 4) * 2}
    waves = [masks([1, 1, 1, 1, 0, 0, 0, 0]), masks([1, 0, 1, 1, 1, 1, 0, 0])]
    write_run(repo, 0.5, changed, waves, perplexity=33.5)
    (repo / "notebooks/resources.ipynb").write_text(notebook("print('bits vs perplexity')"))
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "prune harder")
    return repo


def test_mask_changes_count_newly_pruned_and_regrown_per_layer():
    old = {"a": np.array([1, 1, 0, 0], bool), "b": np.zeros(4, bool), "c": np.zeros(3, bool)}
    new = {"a": np.array([0, 1, 1, 1], bool), "b": np.zeros(4, bool), "c": np.zeros(2, bool), "d": np.ones(1, bool)}
    changes = mask_changes(old, new)
    assert changes["a"] == {
        "status": "changed",
        "weights": 4,
        "pruned_before": 2,
        "pruned_after": 3,
        "newly_pruned": 2,
        "regrown": 1,
    }
    assert changes["b"]["status"] == "same" and changes["b"]["newly_pruned"] == 0
    assert changes["c"] == {"status": "reshaped", "old_shape": [3], "new_shape": [2]}
    assert changes["d"] == {"status": "added"}


def test_safetensors_hashes_equal_the_seed_fingerprint(tmp_path):
    tensors = {"w": torch.randn(3, 5), "b": torch.arange(7, dtype=torch.int64), "h": torch.randn(4).half()}
    save_file(tensors, tmp_path / "x.safetensors")
    hashes = safetensors_tensor_sha256((tmp_path / "x.safetensors").read_bytes())
    assert hashes == {name: tensor_sha256(t) for name, t in tensors.items()}


def test_bundle_of_a_commit_against_its_parent(two_commits):
    repo = two_commits
    bundle = write_bundle(repo)
    sha = git(repo, "rev-parse", "HEAD").strip()
    assert bundle == repo / "diffs" / sha

    params = json.loads((bundle / "params.json").read_text())
    assert params == {"conf/base/parameters_prune.yml": [{"key": "prune.target_sparsity", "old": 0.25, "new": 0.5}]}
    assert "-  target_sparsity: 0.25" in (bundle / "config.diff").read_text()

    metrics = {
        r["key"]: r for r in json.loads((bundle / "metrics.json").read_text())["data/08_reporting/pruned_metrics.json"]
    }
    assert set(metrics) == {"perplexity", "sparsity"}  # the text field is not a metric
    assert metrics["perplexity"]["diff"] == pytest.approx(3.5)

    tensors = json.loads((bundle / "tensors.json").read_text())
    for path in ("models/pruned/model.safetensors", "data/02_intermediate/seed.json"):
        assert tensors[path]["changed"] == ["layers.0.q"] and tensors[path]["unchanged"] == 1, path

    mask_json = json.loads((bundle / "masks.json").read_text())
    q = mask_json["against_parent"]["layers.0.q"]  # parent wave_1 -> this commit's wave_2
    assert (q["newly_pruned"], q["regrown"], q["pruned_after"]) == (4, 1, 5)
    q2 = mask_json["waves"]["wave_2"]["layers.0.q"]  # wave_1 -> wave_2 within this run
    assert (q2["newly_pruned"], q2["regrown"]) == (2, 1)

    nb_diff = (bundle / "notebooks" / "notebooks__resources.ipynb.txt").read_text()
    assert "print('bits vs perplexity')" in nb_diff and "print('bits')" in nb_diff

    summary = (bundle / "summary.md").read_text()
    assert "prune harder" in summary and "`prune.target_sparsity` 0.25 -> 0.5" in summary
    assert "4 weights newly pruned, 1 regrown" in summary
    for file in bundle.rglob("*"):
        assert file.is_dir() or file.stat().st_size < 100_000  # small text files only
        if file.is_file():
            file.read_text(encoding="utf-8")


def test_bundle_compares_two_run_directories(two_commits, tmp_path):
    other = tmp_path / "other_run"
    write_run(other, 0.5, WEIGHTS, [masks([0, 0, 0, 0, 0, 0, 0, 0])], perplexity=40.0)
    bundle = write_bundle(two_commits, old_run=DirectoryFiles(other), new_run=DirectoryFiles(two_commits))
    tensors = json.loads((bundle / "tensors.json").read_text())
    assert tensors["models/pruned/model.safetensors"]["changed"] == ["layers.0.q"]
    q = json.loads((bundle / "masks.json").read_text())["against_parent"]["layers.0.q"]
    assert (q["newly_pruned"], q["regrown"]) == (5, 0)


def test_bundle_reads_dvc_tracked_outputs_from_the_cache(tmp_path):
    repo = init_repo(tmp_path / "repo")
    subprocess.run(["dvc", "init", "-q"], cwd=repo, env=tool_env(DVC_NO_ANALYTICS="1"), check=True)
    (repo / ".gitignore").write_text("")
    outputs = ["models/baseline", "models/pruned", "data/06_models/masks", "data/08_reporting/pruned_metrics.json"]
    (repo / "models/baseline").mkdir(parents=True)
    save_file(WEIGHTS, repo / "models/baseline/model.safetensors")  # the same in both commits
    for k, (sparsity, weights, wave) in enumerate(
        [
            (0.25, WEIGHTS, [1, 0, 0, 0, 0, 0, 0, 0]),
            (0.5, {**WEIGHTS, "layers.0.k": torch.zeros(2, 4)}, [1, 1, 0, 0, 0, 0, 0, 0]),
        ]
    ):
        write_run(repo, sparsity, weights, [masks(wave)], perplexity=30.0 + k)
        subprocess.run(["dvc", "add", "-q", *outputs], cwd=repo, env=tool_env(DVC_NO_ANALYTICS="1"), check=True)
        git(repo, "add", "-A")
        git(repo, "commit", "-qm", f"run {k}")
    assert "data/08_reporting/pruned_metrics.json\n" not in git(repo, "ls-files")  # the outputs live in DVC, not git
    bundle = write_bundle(repo)
    tensors = json.loads((bundle / "tensors.json").read_text())
    assert tensors["models/pruned/model.safetensors"]["changed"] == ["layers.0.k"]
    assert tensors["models/baseline/model.safetensors"] == {
        "changed": [],
        "added": [],
        "removed": [],
        "unchanged": 2,
        "status": "identical",  # same DVC object: only its header was read
    }
    q = json.loads((bundle / "masks.json").read_text())["against_parent"]["layers.0.q"]
    assert (q["newly_pruned"], q["regrown"]) == (1, 0)
    assert "| pruned_metrics.json | perplexity | 30 | 31 | 1 |" in (bundle / "summary.md").read_text()

    shutil.rmtree(repo / ".dvc" / "cache")  # e.g. a clone that never pulled: the bundle says less, never fails
    sparse = write_bundle(repo)
    assert json.loads((sparse / "masks.json").read_text())["waves"] == {}
    assert json.loads((sparse / "tensors.json").read_text())["models/baseline/model.safetensors"]["unchanged"] is None


def test_release_tags_the_commit_with_the_bundle_summary(two_commits):
    env = {**tool_env(), "PYTHONPATH": str(ROOT / "src")}
    subprocess.run([sys.executable, str(SCRIPT), "--repo", str(two_commits), "--release", "0.2.0"], env=env, check=True)
    sha = git(two_commits, "rev-parse", "HEAD").strip()
    assert git(two_commits, "rev-list", "-n", "1", "v0.2.0").strip() == sha
    message = git(two_commits, "tag", "-l", "--format=%(contents)", "v0.2.0")
    assert f"Diff bundle: {sha}" in message and "prune.target_sparsity" in message
    assert json.loads((two_commits / "diffs" / sha / "release.json").read_text())["tag"] == "v0.2.0"


def test_post_commit_hook_writes_a_bundle_per_commit(two_commits):
    repo = two_commits
    shutil.copytree(ROOT / "scripts", repo / "scripts")
    shutil.copytree(
        ROOT / "src" / "bird_bone", repo / "src" / "bird_bone", ignore=shutil.ignore_patterns("__pycache__")
    )
    env = {**tool_env(), "VENV_BIN": str(Path(sys.executable).parent)}
    subprocess.run(["bash", "scripts/install_hooks.sh"], cwd=repo, env=env, check=True, capture_output=True)
    assert "nbdiff" in git(repo, "config", "--get", "diff.jupyternotebook.command")
    (repo / "conf/base/parameters_prune.yml").write_text(yaml.safe_dump({"prune": {"target_sparsity": 0.7}}))
    git(repo, "add", "conf")
    commit_env = {**env, "PRE_COMMIT_ALLOW_NO_CONFIG": "1"}
    subprocess.run(["git", "commit", "-qm", "0.7"], cwd=repo, env=commit_env, check=True, capture_output=True)
    sha = git(repo, "rev-parse", "HEAD").strip()
    summary = repo / "diffs" / sha / "summary.md"
    assert summary.is_file(), (repo / ".git" / "diff-bundle.log").read_text()
    assert "`prune.target_sparsity` 0.5 -> 0.7" in summary.read_text()
    assert os.access(repo / ".git/hooks/post-commit", os.X_OK)
