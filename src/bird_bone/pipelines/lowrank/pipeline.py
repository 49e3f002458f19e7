"""Low-rank factorization of the loop's final model; its output is the run's compressed model."""

from kedro.pipeline import Node, Pipeline


def create_pipeline(**kwargs) -> Pipeline:
    from bird_bone.pipelines.lowrank import nodes

    return Pipeline(
        [
            Node(
                nodes.low_rank_merge,
                [
                    "loop.final_checkpoint",
                    "prune.activation_statistics",
                    "seeding.evaluation_windows",
                    "loop.metrics",
                    "params:lowrank",
                    "params:eval",
                ],
                ["compressed_model", "lowrank.report"],
                name="low_rank_merge",
                namespace="lowrank",
            )
        ]
    )
