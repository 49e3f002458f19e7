"""Seeding: the first stage. Baseline checkpoint, fingerprints, metrics and report."""

from kedro.pipeline import Node, Pipeline


def create_pipeline(**kwargs) -> Pipeline:
    from bird_bone.pipelines.seeding import nodes

    return Pipeline(
        [
            Node(nodes.load_base_model, "params:model", "baseline_checkpoint", name="load_base_model"),
            Node(
                nodes.load_evaluation_text,
                "params:data",
                ["evaluation_text", "evaluation_text_source"],
                name="load_evaluation_text",
            ),
            Node(
                nodes.make_evaluation_windows,
                ["baseline_checkpoint", "evaluation_text", "evaluation_text_source", "params:eval"],
                "evaluation_windows",
                name="make_evaluation_windows",
            ),
            Node(
                nodes.make_second_evaluation_windows,
                ["baseline_checkpoint", "params:data", "params:eval"],
                "second_evaluation_windows",
                name="make_second_evaluation_windows",
            ),
            Node(
                nodes.evaluate_model,
                ["baseline_checkpoint", "evaluation_windows", "params:eval", "second_evaluation_windows"],
                "baseline_metrics",
                name="evaluate_model",
            ),
            Node(
                nodes.evaluate_tasks,
                ["baseline_checkpoint", "evaluation_text_source", "params:eval"],
                "baseline_lm_eval",
                name="evaluate_tasks",
            ),
            Node(nodes.snapshot_seed, ["baseline_checkpoint", "parameters"], "seed", name="snapshot_seed"),
            Node(
                nodes.build_report,
                ["seed", "evaluation_text_source", "baseline_metrics", "baseline_lm_eval"],
                ["report_json", "report_md"],
                name="build_report",
            ),
        ],
        namespace="seeding",
        parameters={"params:model", "params:data", "params:eval"},
    )
