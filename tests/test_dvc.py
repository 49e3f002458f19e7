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

from bird_bone.heal.report import curve_csv
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


def out_paths(stage: dict) -> list[str]:
    return [o if isinstance(o, str) else next(iter(o)) for o in outs(stage)]


def test_stage_outputs_do_not_overlap():
    paths = [p for s in STAGES.values() for p in out_paths(s)]
    assert len(paths) == len(set(paths))
    nested = [(a, b) for a in paths for b in paths if b.startswith(a + "/")]
    assert nested == []
    expected = {"models/baseline", "models/waves", "models/compressed", "data/06_models/masks", "models/pruned"}
    assert expected <= set(paths)


def dataset_paths(description) -> list[str]:
    """Every local path a dataset's description names (nested datasets included)."""
    found = []
    for key, value in (description or {}).items():
        if isinstance(value, dict):
            found += dataset_paths(value)
        elif key in ("path", "filepath", "state", "record", "checkpoint") and value is not None:
            found.append(str(value))
    return found


def covered(path: str, roots: list[str]) -> bool:
    return any(path == root or path.startswith(root + "/") for root in roots)


def test_each_stage_depends_on_every_dataset_its_kedro_run_loads(monkeypatch):
    """DVC runs each stage alone: every input of its Kedro run must be a file that is a dependency
    (or, like a wave's resume state, the stage's own output). A memory-only input would be empty."""
    from kedro.framework.project import pipelines
    from kedro.framework.session import KedroSession
    from kedro.framework.startup import bootstrap_project
    from kedro.io import MemoryDataset

    monkeypatch.setenv("KEDRO_DISABLE_TELEMETRY", "true")
    monkeypatch.chdir(ROOT)
    bootstrap_project(ROOT)
    with KedroSession.create(project_path=ROOT, runtime_params={"prune": {"waves": 2}}) as session:
        catalog = session.load_context().catalog
        for name, spec in STAGES.items():
            args = kedro_args(spec["cmd"])
            pipeline = pipelines[args["--pipeline"]]
            if "--from-nodes" in args:
                pipeline = pipeline.from_nodes(*args["--from-nodes"].split(","))
            if "--to-nodes" in args:
                pipeline = pipeline.to_nodes(*args["--to-nodes"].split(","))
            roots = [*spec.get("deps", []), *out_paths(spec)]
            for dataset in sorted(pipeline.inputs()):
                if dataset.startswith("params:") or dataset == "parameters":
                    continue
                loaded = catalog.get(dataset)
                assert not isinstance(loaded, MemoryDataset), f"{name}: {dataset} is memory-only"
                paths = [str(Path(p).resolve().relative_to(ROOT)) for p in dataset_paths(loaded._describe())]
                assert paths, f"{name}: {dataset} names no file"
                for path in paths:
                    assert covered(path, roots), f"{name}: {dataset} reads {path}, not a dependency of the stage"


def test_top_level_plots_draw_stage_outputs_with_project_templates():
    spec = yaml.safe_load((ROOT / "dvc.yaml").read_text())
    produced = [p for s in STAGES.values() for p in out_paths(s)]
    columns = curve_csv([]).strip().split(",")  # the healing curve's columns, as the loop writes them
    assert spec["plots"]
    for entry in spec["plots"]:
        ((title, plot),) = entry.items()
        template = json.loads((ROOT / ".dvc" / "plots" / f"{plot['template']}.json").read_text())
        assert "<DVC_METRIC_DATA>" in json.dumps(template), title
        for path, field in plot["y"].items():
            assert path == "data/08_reporting/healing_curve.csv" and path in produced, title
            assert {field, plot["x"]} <= set(columns), title


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.slow
def test_dvc_repro_experiment_diffs_and_rollback_offline(tmp_path):
    repo = write_tiny_project(tmp_path / "repo")  # two waves of two heal steps (tests/tiny_project.py)
    # Unstructured waves the budget keeps (a random tiny model breaks any real budget): sparsity moves
    # with prune.target_sparsity, which the experiment below changes.
    for name, group, values in (
        ("prune", "prune", {"method": "wanda"}),
        ("budget", "budget", {"max_ppl_increase": 1e6}),
    ):
        path = repo / "conf" / "base" / f"parameters_{name}.yml"
        config = yaml.safe_load(path.read_text())
        config[group].update(values)
        path.write_text(yaml.safe_dump(config, sort_keys=False))
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
    shutil.copytree(ROOT / ".dvc" / "plots", repo / ".dvc" / "plots")
    tool("git", "add", "-A")
    tool("git", "commit", "-qm", "project")
    # Kedro's default run as DVC stages: seeding, activations, the loop's waves, low-rank.
    log = tool("dvc", "repro", "lowrank")
    for stage in ("seeding", "activations", "waves", "lowrank"):
        assert f"Running stage '{stage}'" in log
    assert set(json.loads(tool("dvc", "status", "--json"))) == {"prune", "novaq", "export"}  # not yet run
    tool("git", "add", "-A")
    tool("git", "commit", "-qm", "run at 0.5")
    shown = json.loads(tool("dvc", "plots", "show", "--json"))  # rendered offline from the cache
    assert {e["name"] for e in shown["errors"]} <= {"data/08_reporting/prune_waves.json"}  # `prune` not run
    plots = shown["data"]
    assert {"data/08_reporting/healing_curves.png", "data/08_reporting/activation_heatmap.png"} <= set(plots)
    assert plots["perplexity per wave"][0]["content"]["data"]["values"]
    loss = plots["heal loss per step"][0]
    points = loss["content"]["data"]["values"]
    assert loss["content"]["transform"][0]["filter"] == "datum['step'] !== '' && datum['loss'] !== ''"
    assert len([p for p in points if p["loss"] != ""]) == 2 * 2  # two waves of two heal steps
    weights = repo / "models" / "waves" / "wave_2" / "model.safetensors"
    first = sha256(weights)
    sparsity = json.loads((repo / "data/08_reporting/loop_metrics.json").read_text())["sparsity"]

    # A pruning and a heal parameter re-run the loop and low-rank only, never the stages before them.
    prune, heal = (
        "conf/base/parameters_prune.yml:prune.target_sparsity=0.6",
        "conf/base/parameters_heal.yml:heal.steps=1",
    )
    log = tool("dvc", "exp", "run", "-S", prune, "-S", heal)
    assert "Stage 'activations' didn't change, skipping" in log and "Running stage 'waves'" in log
    assert "Running stage 'lowrank'" in log and "Running stage 'seeding'" not in log
    assert sha256(weights) != first
    curve = (repo / "data/08_reporting/healing_curve.csv").read_text().splitlines()
    assert len([row for row in curve[1:] if row.split(",")[2]]) == 2  # one heal step per wave

    shown = json.loads(tool("dvc", "exp", "show", "--json"))
    experiments = [exp for rev in shown for exp in (rev.get("experiments") or [])]
    assert experiments, shown
    params = json.loads(tool("dvc", "params", "diff", "--json"))
    change = params["conf/base/parameters_prune.yml"]["prune.target_sparsity"]
    assert (change["old"], change["new"]) == (0.5, 0.6)
    change = params["conf/base/parameters_heal.yml"]["heal.steps"]
    assert (change["old"], change["new"]) == (2, 1)
    metrics = json.loads(tool("dvc", "metrics", "diff", "--json"))["data/08_reporting/loop_metrics.json"]
    assert metrics["sparsity"]["old"] == pytest.approx(sparsity) and metrics["sparsity"]["new"] > sparsity
    changed = {entry["path"] for entry in json.loads(tool("dvc", "diff", "--json"))["modified"]}
    assert {"models/waves/wave_2/model.safetensors", "data/06_models/masks/wave_2.safetensors"} <= changed
    assert "models/baseline/model.safetensors" not in changed

    # Roll back: the committed parameters and dvc.lock, then `dvc checkout` restores the earlier model.
    tool("git", "checkout", "--", ".")
    tool("dvc", "checkout", "waves", "lowrank")  # `prune` and `novaq` never ran here: nothing to check out
    assert sha256(weights) == first
    assert json.loads(tool("dvc", "status", "waves", "lowrank", "--json")) == {}
