"""Project pipelines: `kedro run` runs them all in order (seeding, then pruning)."""

from kedro.pipeline import Pipeline

from bird_bone.pipelines.prune.pipeline import create_pipeline as prune
from bird_bone.pipelines.seeding.pipeline import create_pipeline as seeding


def register_pipelines() -> dict[str, Pipeline]:
    pipelines = {"seeding": seeding(), "prune": prune()}
    pipelines["__default__"] = sum(pipelines.values(), Pipeline([]))
    return pipelines
