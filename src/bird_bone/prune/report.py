"""The pruning report in Markdown: baseline against pruned, and every wave."""

from __future__ import annotations


def render_prune_report(report: dict) -> str:
    base, pruned, prune = report["baseline"], report["pruned"], report["prune"]
    delta = pruned["perplexity"] / base["perplexity"] - 1
    lines = [
        f"# bird-bone pruning report: {prune['method']} ({prune['pattern']}), {prune['waves']} wave(s)",
        "",
        f"- Model: `{report['model']['spec']}`"
        + (f" ({report['model']['description']})" if report["model"].get("description") else ""),
        f"- Calibration text: `{report['calibration']['spec']}` ({report['calibration']['location']})",
        f"- Evaluation: {pruned['eval_windows']} windows of {pruned['eval_window_length']} tokens",
        "",
        "| | perplexity | sparsity (all parameters) | parameters | tokens/s |",
        "| --- | --- | --- | --- | --- |",
    ]
    for name, m in (("baseline", base), ("pruned", pruned)):
        lines.append(
            f"| {name} | {m['perplexity']:.3f} | {m['sparsity']:.4f} | {m['parameters']:,} | "
            f"{m['tokens_per_second']:.0f} |"
        )
    lines += [
        "",
        f"Perplexity change: {delta:+.2%}.",
        "",
        "## Waves",
        "",
        "| wave | pattern | sparsity of pruned layers | neurons removed | seconds |",
        "| --- | --- | --- | --- | --- |",
    ]
    for w in report["waves"]:
        sparsity = f"{w['sparsity']:.4f}" if "sparsity" in w else "-"
        removed = f"{w['neurons_removed']:.4f}" if "neurons_removed" in w else "-"
        lines.append(f"| {w['wave']} | {w['pattern']} | {sparsity} | {removed} | {w.get('seconds', 0):.1f} |")
    return "\n".join(lines) + "\n"
