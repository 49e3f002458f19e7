"""Project pipelines."""

from kedro.pipeline import Pipeline

from bird_bone.pipelines.seeding.pipeline import create_pipeline as seeding


def register_pipelines() -> dict[str, Pipeline]:
    pipelines = {"seeding": seeding()}
    pipelines["__default__"] = sum(pipelines.values(), Pipeline([]))
    return pipelines
