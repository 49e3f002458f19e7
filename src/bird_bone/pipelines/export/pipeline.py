"""GGUF export: the compressed checkpoint (with the activation statistics as llama.cpp importance
matrix) written as a GGUF file, then read back, sized and scored in llama.cpp."""

from kedro.pipeline import Node, Pipeline


def create_pipeline(**kwargs) -> Pipeline:
    from bird_bone.pipelines.export import nodes

    return Pipeline(
        [
            Node(
                nodes.quantize_gguf,
                ["compressed_model", "prune.activation_statistics", "params:data", "params:export"],
                "gguf_model",
                name="quantize_gguf",
            ),
            Node(
                nodes.report_gguf,
                ["gguf_model", "seeding.evaluation_windows", "params:export"],
                "export_report",
                name="report_gguf",
            ),
        ],
        namespace="export",
        inputs={"compressed_model", "prune.activation_statistics", "seeding.evaluation_windows"},
        parameters={"params:data", "params:export"},
    )
