"""Project pipelines. `kedro run` runs the default: seeding, then pruning. NOVAQ quantization runs on
its own (`kedro run --pipeline novaq`) until its quality targets are met (see docs/benchmarks.md); GGUF
export also runs on its own (`kedro run --pipeline export`)."""

from kedro.pipeline import Pipeline

from bird_bone.pipelines.export.pipeline import create_pipeline as export
from bird_bone.pipelines.novaq.pipeline import create_pipeline as novaq
from bird_bone.pipelines.prune.pipeline import create_pipeline as prune
from bird_bone.pipelines.seeding.pipeline import create_pipeline as seeding


def register_pipelines() -> dict[str, Pipeline]:
    pipelines = {"seeding": seeding(), "prune": prune(), "novaq": novaq()}
    pipelines["__default__"] = pipelines["seeding"] + pipelines["prune"]
    pipelines["all"] = sum(pipelines.values(), Pipeline([]))
    # GGUF export runs on its own (`kedro run --pipeline export`) until its input `compressed_model`
    # is wired to the last compression stage's output; in `all` it could run before models/pruned exists.
    pipelines["export"] = export()
    return pipelines
