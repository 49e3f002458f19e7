"""dvc.yaml: every stage names a registered Kedro pipeline, real nodes and real parameter keys (fast);
and the whole DVC workflow runs offline, with no remote, in a temporary git repo on a tiny model (slow):
repro, an experiment with a changed parameter, exp show, params / metrics / data diffs, and roll-back."""

from __future__ import annotations

import hashlib
import json
import shlex
import shutil
from pathlib import Path

import pytest
import yaml

from tests.conftest import ROOT
from tests.tiny_project import run_tool, write_tiny_project

STAGES = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]


def kedro_args(cmd: str) -> dict[str, str]:
    words = shlex.split(cmd)
    start = words.index("kedro")
    assert words[start + 1] == "run", cmd
    options = words[start + 2 :]
    return dict(zip(options[::2], options[1::2]))


def lookup(tree: dict, dotted: str):
    for key in dotted.split("."):
        tree = tree[key]
    return tree


@pytest.mark.parametrize("stage", sorted(STAGES))
def test_stage_runs_a_registered_pipeline_with_real_nodes_and_parameters(stage):
    from bird_bone.pipeline_registry import register_pipelines

    spec = STAGES[stage]
    args = kedro_args(spec["cmd"])
    pipelines = register_pipelines()
    assert args["--pipeline"] in pipelines, f"{stage}: no Kedro pipeline {args['--pipeline']!r}"
    node_names = {node.name for node in pipelines[args["--pipeline"]].nodes}
    for option in ("--from-nodes", "--to-nodes", "--nodes"):
        for name in args.get(option, "").split(",") if option in args else []:
            assert name in node_names, f"{stage}: {option} {name} is not a node of {args['--pipeline']}"
    for dep in spec.get("deps", []):
        produced = any(dep in (o if isinstance(o, str) else next(iter(o))) for s in STAGES.values() for o in outs(s))
        assert (ROOT / dep).exists() or produced, f"{stage}: dependency {dep} is neither in the repo nor produced"
    for entry in spec["params"]:
        for path, keys in entry.items():
            tree = yaml.safe_load((ROOT / path).read_text())
            for key in keys:
                lookup(tree, key)  # KeyError names a parameter that is not in the file


def outs(stage: dict) -> list:
    return [*stage.get("outs", []), *stage.get("metrics", []), *stage.get("plots", [])]


def test_stage_outputs_do_not_overlap():
    paths = [o if isinstance(o, str) else next(iter(o)) for s in STAGES.values() for o in outs(s)]
    assert len(paths) == len(set(paths))
    assert {"models/baseline", "models/pruned", "data/06_models/masks"} <= set(paths)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.slow
def test_dvc_repro_experiment_diffs_and_rollback_offline(tmp_path):
    repo = write_tiny_project(tmp_path / "repo")
    for name in ("dvc.yaml", ".gitignore", ".dvcignore"):
        shutil.copy(ROOT / name, repo)
    shutil.copytree(
        ROOT / "src" / "bird_bone", repo / "src" / "bird_bone", ignore=shutil.ignore_patterns("__pycache__")
    )

    def tool(*args: str) -> str:
        return run_tool(repo, *args, timeout=600).stdout

    tool("git", "init", "-q")
    tool("git", "config", "user.email", "test@bird-bone")
    tool("git", "config", "user.name", "test")
    tool("dvc", "init", "-q")
    tool("git", "add", "-A")
    tool("git", "commit", "-qm", "project")
    # The default Kedro run (seeding, activation logging, pruning); `novaq` is left for its own tests.
    tool("dvc", "repro", "prune")
    assert "novaq" in tool("dvc", "status", "--json")  # the only stage not yet run
    tool("git", "add", "-A")
    tool("git", "commit", "-qm", "run at 0.5")
    plots = tool("dvc", "plots", "show", "--json")  # rendered offline from the cache
    assert "data/08_reporting/prune_waves.json" in plots and "activation_heatmap.png" in plots
    weights = repo / "models" / "pruned" / "model.safetensors"
    first = sha256(weights)
    sparsity = json.loads((repo / "data/08_reporting/pruned_metrics.json").read_text())["sparsity"]

    log = tool("dvc", "exp", "run", "-S", "conf/base/parameters_prune.yml:prune.target_sparsity=0.6")
    assert "Stage 'seeding' didn't change, skipping" in log and "Running stage 'prune'" in log
    assert sha256(weights) != first

    shown = json.loads(tool("dvc", "exp", "show", "--json"))
    experiments = [exp for rev in shown for exp in (rev.get("experiments") or [])]
    assert experiments, shown
    params = json.loads(tool("dvc", "params", "diff", "--json"))
    change = params["conf/base/parameters_prune.yml"]["prune.target_sparsity"]
    assert (change["old"], change["new"]) == (0.5, 0.6)
    metrics = json.loads(tool("dvc", "metrics", "diff", "--json"))["data/08_reporting/pruned_metrics.json"]
    assert metrics["sparsity"]["old"] == pytest.approx(sparsity) and metrics["sparsity"]["new"] > sparsity
    changed = {entry["path"] for entry in json.loads(tool("dvc", "diff", "--json"))["modified"]}
    assert {"models/pruned/model.safetensors", "data/06_models/masks/wave_1.safetensors"} <= changed
    assert "models/baseline/model.safetensors" not in changed

    # Roll back: the committed parameters and dvc.lock, then `dvc checkout` restores the earlier model.
    tool("git", "checkout", "--", ".")
    tool("dvc", "checkout", "prune")  # `novaq` never ran here, so it has nothing to check out
    assert sha256(weights) == first
    assert json.loads(tool("dvc", "status", "prune", "--json")) == {}
