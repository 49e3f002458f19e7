"""NOVAQ: quantize the baseline (normalize, residual codebooks, teacher-guided refinement), write the
NOVAQ directory (models/novaq/), read it back and measure its perplexity."""

from kedro.pipeline import Node, Pipeline


def create_pipeline(**kwargs) -> Pipeline:
    from bird_bone.pipelines.novaq import nodes

    return Pipeline(
        [
            Node(
                nodes.make_calibration_windows,
                ["seeding.baseline_checkpoint", "params:data", "params:novaq"],
                "calibration_windows",
                name="make_calibration_windows",
            ),
            Node(
                nodes.quantize_model,
                ["seeding.baseline_checkpoint", "calibration_windows", "params:novaq"],
                ["novaq_model", "novaq_report"],
                name="quantize_model",
            ),
            Node(
                nodes.evaluate_novaq,
                ["novaq_model", "params:data", "params:eval"],
                "novaq_metrics",
                name="evaluate_novaq",
            ),
        ],
        namespace="novaq",
        inputs={"seeding.baseline_checkpoint"},
        parameters={"params:data", "params:eval", "params:novaq"},
    )
