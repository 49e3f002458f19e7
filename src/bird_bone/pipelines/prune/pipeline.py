"""Pruning: calibration windows and activation logging (also the loop's first stage), and
one-shot pruning waves without healing, evaluated and reported."""

from kedro.pipeline import Node, Pipeline


def create_activations_pipeline(**kwargs) -> Pipeline:
    """Calibration windows and the activation statistics of the dense model (namespace ``prune``)."""
    from bird_bone.pipelines.prune import nodes

    return Pipeline(
        [
            Node(
                nodes.make_calibration_windows,
                ["seeding.baseline_checkpoint", "params:data"],
                ["calibration_windows", "calibration_text_source"],
                name="make_calibration_windows",
            ),
            Node(
                nodes.log_activation_statistics,
                ["seeding.baseline_checkpoint", "calibration_windows", "params:data", "params:prune"],
                ["activation_statistics", "activation_heatmap"],
                name="log_activation_statistics",
            ),
        ],
        namespace="prune",
        inputs={"seeding.baseline_checkpoint"},
        parameters={"params:data", "params:prune"},
    )


def create_pipeline(**kwargs) -> Pipeline:
    """One-shot pruning (no healing): activations, then ``prune.waves`` waves, evaluation, report."""
    from bird_bone.pipelines.prune import nodes
    from bird_bone.pipelines.seeding.nodes import evaluate_model

    oneshot = Pipeline(
        [
            Node(
                nodes.prune_model,
                ["seeding.baseline_checkpoint", "calibration_windows", "params:data", "params:prune"],
                ["pruned_checkpoint", "wave_masks", "wave_summaries"],
                name="prune_model",
            ),
            Node(
                evaluate_model,
                ["pruned_checkpoint", "seeding.evaluation_windows", "params:eval"],
                "pruned_metrics",
                name="evaluate_pruned_model",
            ),
            Node(
                nodes.build_prune_report,
                [
                    "seeding.baseline_checkpoint",
                    "calibration_text_source",
                    "seeding.baseline_metrics",
                    "pruned_metrics",
                    "wave_summaries",
                    "params:prune",
                ],
                ["report_json", "report_md"],
                name="build_prune_report",
            ),
        ],
        namespace="prune",
        inputs={
            "seeding.baseline_checkpoint",
            "seeding.evaluation_windows",
            "seeding.baseline_metrics",
        },
        parameters={"params:data", "params:prune", "params:eval"},
    )
    return create_activations_pipeline() + oneshot
