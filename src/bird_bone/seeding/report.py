"""The run report in Markdown, rendered from the same dict that is stored as JSON."""

from __future__ import annotations


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:,.4g}" if abs(value) < 1e4 else f"{value:,.0f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def render_report(report: dict) -> str:
    """Markdown for a report with keys model, texts, metrics, lm_eval, seed (see seeding nodes)."""
    model, metrics = report["model"], report["metrics"]
    lines = [
        f"# bird-bone report: {report.get('title', 'baseline')}",
        "",
        f"- Model: `{model['spec']}` ({model['kind']}) from `{model['location']}`",
    ]
    if model.get("description"):
        lines.append(f"- Note: {model['description']}")
    for role, text in report["texts"].items():
        lines.append(
            f"- {role.capitalize()} text: `{text['spec']}` ({text['kind']}: {text['location']}, "
            f"sha256 {text['sha256'][:12]}…)"
        )
    seed = report.get("seed", {})
    if seed:
        lines += [
            f"- State dict SHA-256: `{seed['state_dict_sha256']}`",
            f"- Parameters hash: `{seed['params_sha256']}`",
            f"- Git commit: `{seed['git'].get('commit')}`" + (" (dirty)" if seed["git"].get("dirty") else ""),
        ]
    lines += ["", "## Metrics", "", "| metric | value |", "| --- | --- |"]
    lines += [f"| {key} | {_fmt(value)} |" for key, value in metrics.items()]
    if report.get("lm_eval"):
        lines += ["", "## lm-eval", "", "| task | metric | value |", "| --- | --- | --- |"]
        for task, scores in report["lm_eval"].items():
            lines += [f"| {task} | {metric} | {_fmt(value)} |" for metric, value in scores.items()]
    return "\n".join(lines) + "\n"
