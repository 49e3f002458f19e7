"""Write the diff bundle of one commit against its parent into ``diffs/<commit-sha>/``: small text files
a reviewer reads instead of weights (the weights themselves stay in DVC).

- ``config.diff``: unified git diff of conf/, dvc.yaml, pyproject.toml, constraints.txt;
- ``params.json``: changed keys of every YAML file under conf/ (flattened, old and new value);
- ``metrics.json``: numeric changes of the run's reporting JSONs (data/08_reporting/*metrics*.json);
- ``tensors.json``: per-tensor SHA-256 changes of seed.json and of every checkpoint under models/;
- ``masks.json``: per-layer weights newly pruned / regrown, parent's last wave against this commit's,
  and wave to wave within this commit's run;
- ``notebooks/*.txt``: nbdime diffs of changed notebooks;
- ``summary.md``: the short version of all of the above.
"""

from __future__ import annotations

import io
import json
import re
import subprocess
from pathlib import Path

import yaml

from bird_bone.bundle.changes import (
    diff_metrics,
    diff_tensor_hashes,
    diff_values,
    flatten,
    mask_changes,
    safetensors_tensor_names,
    safetensors_tensor_sha256,
)
from bird_bone.bundle.sources import RevisionFiles, git
from bird_bone.io.atomic import atomic_directory

CONFIG_PATHS = ("conf", "dvc.yaml", "pyproject.toml", "constraints.txt", ".pre-commit-config.yaml")
REPORTING = "data/08_reporting"
SEED = "data/02_intermediate/seed.json"
MASKS = "data/06_models/masks"
EMPTY_TREE = "4b825dc642cb6eb9a060e54bf8d69288fbee4904"  # git's empty tree: the parent of a root commit


def resolve(repo: Path, rev: str) -> str:
    return git(repo, "rev-parse", "--verify", f"{rev}^{{commit}}").strip()


def parent_of(repo: Path, commit: str) -> str | None:
    parents = git(repo, "rev-list", "--parents", "-n", "1", commit).split()[1:]
    return parents[0] if parents else None


def write_bundle(
    repo: Path,
    commit: str = "HEAD",
    parent: str | None = None,
    out_root: Path | None = None,
    old_run=None,
    new_run=None,
) -> Path:
    """Write ``diffs/<sha>/`` for ``commit`` against ``parent`` (default: its first parent); returns the path.

    ``old_run`` / ``new_run`` (a sources.DirectoryFiles or RevisionFiles) replace the run outputs read from
    the two revisions, e.g. to compare two run directories.
    """
    repo = Path(repo)
    sha = resolve(repo, commit)
    base = resolve(repo, parent) if parent else parent_of(repo, sha)
    old_run = old_run or (RevisionFiles(repo, base) if base else None)
    new_run = new_run or RevisionFiles(repo, sha)
    sections = {
        "params": config_changes(repo, base, sha),
        "metrics": metric_changes(old_run, new_run),
        "tensors": tensor_changes(old_run, new_run),
        "masks": mask_set_changes(old_run, new_run),
    }
    notebooks = notebook_diffs(repo, base, sha)
    config_diff = git(repo, "diff", base or EMPTY_TREE, sha, "--", *CONFIG_PATHS)
    target = Path(out_root or repo / "diffs") / sha
    with atomic_directory(target) as tmp:
        for name, data in sections.items():
            (tmp / f"{name}.json").write_text(json.dumps(data, indent=1, default=str) + "\n")
        (tmp / "config.diff").write_text(config_diff)
        if notebooks:
            (tmp / "notebooks").mkdir()
            for path, text in notebooks.items():
                (tmp / "notebooks" / (path.replace("/", "__") + ".txt")).write_text(text)
        subject = git(repo, "log", "-1", "--format=%s", sha).strip()
        (tmp / "summary.md").write_text(render_summary(sha, base, subject, sections, notebooks))
    return target


def config_changes(repo: Path, base: str | None, sha: str) -> dict[str, list[dict]]:
    names = git(repo, "diff", "--name-only", base or EMPTY_TREE, sha, "--", "conf").split()
    changes = {}
    for path in (p for p in names if p.endswith((".yml", ".yaml"))):
        old, new = (_yaml(repo, rev, path) for rev in (base, sha))
        rows = diff_values(flatten(old), flatten(new))
        if rows:
            changes[path] = rows
    return changes


def _yaml(repo: Path, rev: str | None, path: str) -> dict:
    if rev is None:
        return {}
    try:
        text = git(repo, "show", f"{rev}:{path}")
    except subprocess.CalledProcessError:  # the file does not exist at that revision
        return {}
    return yaml.safe_load(text) or {}


def _json(files, path: str):
    data = files.read(path) if files is not None else None
    return json.loads(data) if data else None


def metric_changes(old_run, new_run) -> dict[str, list[dict]]:
    paths = set(new_run.find(REPORTING, ".json")) | set(old_run.find(REPORTING, ".json") if old_run else [])
    out = {}
    for path in sorted(p for p in paths if "metrics" in Path(p).name):
        old, new = _json(old_run, path), _json(new_run, path)
        if old is None and new is None:
            continue
        rows = diff_metrics(old or {}, new or {})
        if rows:
            out[path] = rows
    return out


def _tensor_hashes(files, path: str) -> dict[str, str] | None:
    data = files.read(path) if files is not None else None
    if data is None:
        return None
    if path.endswith(".json"):
        return {name: entry["sha256"] for name, entry in json.loads(data)["tensors"].items()}
    return safetensors_tensor_sha256(data)


def tensor_changes(old_run, new_run) -> dict[str, dict]:
    checkpoints = set(new_run.find("models", ".safetensors")) | set(
        old_run.find("models", ".safetensors") if old_run else []
    )
    out = {}
    for path in [SEED, *sorted(checkpoints)]:
        digest = new_run.digest(path) if path.endswith(".safetensors") else None
        if old_run is not None and digest is not None and old_run.digest(path) == digest:
            try:
                with new_run.open(path) as handle:  # same DVC object on both sides: read the header only
                    unchanged = len(safetensors_tensor_names(handle))
            except FileNotFoundError:  # not in the local DVC cache
                unchanged = None
            out[path] = {"changed": [], "added": [], "removed": [], "unchanged": unchanged, "status": "identical"}
            continue
        old, new = _tensor_hashes(old_run, path), _tensor_hashes(new_run, path)
        if old is None and new is None:
            continue
        diff = diff_tensor_hashes(old or {}, new or {})
        diff["unchanged"] = len(diff["unchanged"])
        diff["status"] = "new only" if old is None else "old only" if new is None else "compared"
        out[path] = diff
    return out


def _wave_number(path: str) -> int:
    digits = re.findall(r"\d+", Path(path).stem)
    return int(digits[-1]) if digits else -1


def _masks(files, path: str) -> dict | None:
    from safetensors.numpy import load

    data = files.read(path)
    return load(data) if data is not None else None  # None: listed in dvc.lock, not in the local cache


def mask_set_changes(old_run, new_run) -> dict:
    new_waves = sorted(new_run.find(MASKS, ".safetensors"), key=_wave_number)
    old_waves = sorted(old_run.find(MASKS, ".safetensors"), key=_wave_number) if old_run else []
    out: dict = {"parent_last_wave": old_waves[-1] if old_waves else None, "last_wave": None, "waves": {}}
    if new_waves and old_waves:
        old, new = _masks(old_run, old_waves[-1]), _masks(new_run, new_waves[-1])
        if old is not None and new is not None:
            out["last_wave"] = {"old": old_waves[-1], "new": new_waves[-1]}
            out["against_parent"] = mask_changes(old, new)
    previous = None
    for path in new_waves:  # wave k-1 -> wave k within this run (regrowth shows here)
        current = _masks(new_run, path)
        if previous is not None and current is not None:
            out["waves"][Path(path).stem] = mask_changes(previous, current)
        previous = current
    return out


def notebook_diffs(repo: Path, base: str | None, sha: str) -> dict[str, str]:
    from nbdime import diff_notebooks
    from nbdime.prettyprint import PrettyPrintConfig, pretty_print_notebook_diff

    names = git(repo, "diff", "--name-only", base or EMPTY_TREE, sha, "--", "*.ipynb").split()
    out = {}
    for path in names:
        old, new = (_notebook(repo, rev, path) for rev in (base, sha))
        text = io.StringIO()
        config = PrettyPrintConfig(out=text, use_color=False, use_git=False)
        pretty_print_notebook_diff(f"{base}:{path}", f"{sha}:{path}", old, diff_notebooks(old, new), config)
        out[path] = text.getvalue()
    return out


def _notebook(repo: Path, rev: str | None, path: str):
    import nbformat

    try:
        text = git(repo, "show", f"{rev}:{path}") if rev else None
    except Exception:
        text = None
    return nbformat.reads(text, as_version=4) if text else nbformat.v4.new_notebook()


def _mask_totals(layers: dict) -> tuple[int, int]:
    rows = [r for r in layers.values() if "newly_pruned" in r]
    return sum(r["newly_pruned"] for r in rows), sum(r["regrown"] for r in rows)


def render_summary(sha: str, base: str | None, subject: str, sections: dict, notebooks: dict) -> str:
    lines = [f"# Diff bundle {sha[:12]}", "", f"{subject}", "", f"Against parent: `{base or '(root commit)'}`", ""]
    lines += ["## Parameters and configuration", ""]
    params = sections["params"]
    if not params:
        lines.append("No parameter changes under conf/.")
    for path, rows in params.items():
        lines += [f"- `{path}`: " + ", ".join(f"`{r['key']}` {r['old']!r} -> {r['new']!r}" for r in rows[:20])]
    lines += ["", "## Metrics", ""]
    if not sections["metrics"]:
        lines.append("No metric changes (or no run outputs to compare).")
    else:
        lines += ["| file | metric | old | new | diff |", "| --- | --- | --- | --- | --- |"]
        for path, rows in sections["metrics"].items():
            for r in rows:
                lines.append(
                    f"| {Path(path).name} | {r['key']} | {_fmt(r['old'])} | {_fmt(r['new'])} | {_fmt(r['diff'])} |"
                )
    lines += [
        "",
        "## Tensors (SHA-256)",
        "",
        "`new only` / `old only`: absent on one side, or not in the local DVC cache.",
        "",
    ]
    if not sections["tensors"]:
        lines.append("No checkpoints or seed fingerprints to compare.")
    for path, d in sections["tensors"].items():
        lines.append(
            f"- `{path}` ({d['status']}): {len(d['changed'])} changed, {len(d['added'])} added, "
            f"{len(d['removed'])} removed, {d['unchanged']} unchanged"
        )
    lines += ["", "## Masks", ""]
    masks = sections["masks"]
    if "against_parent" in masks:
        pruned, regrown = _mask_totals(masks["against_parent"])
        last = masks["last_wave"]
        lines.append(f"- parent `{last['old']}` -> `{last['new']}`: {pruned} weights newly pruned, {regrown} regrown")
    for wave, layers in masks["waves"].items():
        pruned, regrown = _mask_totals(layers)
        lines.append(f"- into `{wave}`: {pruned} newly pruned, {regrown} regrown")
    if "against_parent" not in masks and not masks["waves"]:
        lines.append("No mask sets to compare.")
    lines += ["", "## Notebooks", ""]
    lines += [f"- `{p}` (nbdime diff in `notebooks/`)" for p in notebooks] or ["No notebook changes."]
    return "\n".join(lines) + "\n"


def _fmt(value) -> str:
    return "-" if value is None else f"{value:.6g}" if isinstance(value, float) else str(value)
