"""Waves ``wave_1`` ... ``wave_N`` (N from ``prune.waves``), each a namespace with its checkpoint
(masks included), record and state in the catalog, then the loop report in namespace ``loop``. ``wave_0`` is
the dense baseline the loop starts from; ``heal.text`` (made once, before the waves) is what every wave
heals on."""

from kedro.pipeline import Node, Pipeline

WAVE_PARAMS = ["params:prune", "params:heal", "params:regrow", "params:stop_loss", "params:data", "params:eval"]


def create_pipeline(waves: int = 1, **kwargs) -> Pipeline:
    from bird_bone.pipelines.loop import nodes

    pipeline_nodes = [
        Node(
            nodes.make_heal_text,
            ["seeding.baseline_checkpoint", "prune.calibration_windows", "params:heal"],
            "heal.text",
            name="make_heal_text",
            namespace="heal",
        ),
        Node(
            nodes.start_loop,
            [
                "seeding.baseline_checkpoint",
                "seeding.baseline_metrics",
                "prune.calibration_windows",
                "seeding.evaluation_windows",
                "seeding.second_evaluation_windows",
                "heal.text",
                "params:eval",
            ],
            ["wave_0.checkpoint", "wave_0.accepted", "wave_0.state"],
            name="start",
            namespace="wave_0",
        ),
    ]
    previous, accepted, state = "wave_0.checkpoint", "wave_0.accepted", "wave_0.state"
    for k in range(1, waves + 1):
        w = f"wave_{k}"
        pipeline_nodes.append(
            Node(
                nodes.wave_node,
                [
                    previous,
                    accepted,
                    state,
                    "seeding.baseline_checkpoint",
                    f"{w}.resume",
                    "prune.calibration_windows",
                    "seeding.evaluation_windows",
                    *WAVE_PARAMS,
                    "params:budget",
                    "seeding.second_evaluation_windows",
                    "heal.text",
                ],
                [f"{w}.checkpoint", f"{w}.accepted", f"{w}.record", f"{w}.state"],
                name="prune_heal_check",
                namespace=w,
            )
        )
        previous, accepted, state = f"{w}.checkpoint", f"{w}.accepted", f"{w}.state"
    records = [f"wave_{k}.record" for k in range(1, waves + 1)]
    states = [f"wave_{k}.state" for k in range(1, waves + 1)]
    pipeline_nodes.append(
        Node(
            nodes.finish_loop,
            [
                "seeding.baseline_metrics",
                previous,
                "params:prune",
                "params:heal",
                "params:stop_loss",
                "params:budget",
                *records,
                *states,
            ],
            [
                "loop.report_json",
                "loop.report_md",
                "loop.healing_curve",
                "loop.healing_plot",
                "loop.metrics",
                "loop.final_checkpoint",
            ],
            name="report",
            namespace="loop",
        )
    )
    return Pipeline(pipeline_nodes)
