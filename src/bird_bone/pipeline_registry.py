"""Project pipelines. `kedro run` runs the default: seeding, activation logging, the
growth-prune-heal waves (``wave_1`` ... ``wave_N``, N = ``prune.waves``), low-rank factorization and
GGUF export of the result (``export.type``, default Q4_K_M). ``prune`` is one-shot pruning without
healing; NOVAQ runs on its own (`kedro run --pipeline novaq`)."""

from kedro.pipeline import Pipeline

from bird_bone.pipelines.export.pipeline import create_pipeline as export
from bird_bone.pipelines.hooks import wave_count
from bird_bone.pipelines.loop.pipeline import create_pipeline as loop
from bird_bone.pipelines.lowrank.pipeline import create_pipeline as lowrank
from bird_bone.pipelines.novaq.pipeline import create_pipeline as novaq
from bird_bone.pipelines.prune.pipeline import create_activations_pipeline as activations
from bird_bone.pipelines.prune.pipeline import create_pipeline as prune
from bird_bone.pipelines.seeding.pipeline import create_pipeline as seeding


def register_pipelines() -> dict[str, Pipeline]:
    pipelines = {
        "seeding": seeding(),
        "activations": activations(),
        "prune": prune(),
        "waves": loop(wave_count()),
        "lowrank": lowrank(),
        "export": export(),
        "novaq": novaq(),
    }
    pipelines["__default__"] = sum(
        (pipelines[name] for name in ("seeding", "activations", "waves", "lowrank", "export")), Pipeline([])
    )
    pipelines["all"] = sum(pipelines.values(), Pipeline([]))
    return pipelines
