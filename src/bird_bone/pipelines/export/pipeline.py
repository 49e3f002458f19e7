"""GGUF export: the compressed checkpoint written as a GGUF file (``export.type: mixed``: a llama.cpp type
per tensor from the exported model's own sensitivity, the smallest file within ``params:budget`` against
the seed perplexity; other types: one llama.cpp file type, the activation statistics as importance
matrix), then read back, sized and scored in llama.cpp."""

from kedro.pipeline import Node, Pipeline


def create_pipeline(**kwargs) -> Pipeline:
    from bird_bone.pipelines.export import nodes

    return Pipeline(
        [
            Node(
                nodes.quantize_gguf,
                [
                    "compressed_model",
                    "prune.activation_statistics",
                    "prune.calibration_windows",
                    "seeding.evaluation_windows",
                    "seeding.baseline_metrics",
                    "params:data",
                    "params:export",
                    "params:budget",
                    "seeding.second_evaluation_windows",
                ],
                ["gguf_model", "mixed_search"],
                name="quantize_gguf",
            ),
            Node(
                nodes.report_gguf,
                ["gguf_model", "mixed_search", "seeding.evaluation_windows", "params:export"],
                "export_report",
                name="report_gguf",
            ),
        ],
        namespace="export",
        inputs={
            "compressed_model",
            "prune.activation_statistics",
            "prune.calibration_windows",
            "seeding.evaluation_windows",
            "seeding.baseline_metrics",
            "seeding.second_evaluation_windows",
        },
        parameters={"params:data", "params:export", "params:budget"},
    )
