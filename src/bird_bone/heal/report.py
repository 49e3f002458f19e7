"""The growth-prune-heal report: a row per wave, the healing curves as a table and as a figure."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def curve_rows(baseline_perplexity: float, records: list[dict]) -> list[dict]:
    """One row per heal step of every wave (loss) plus one per wave end (perplexity, sparsity)."""
    rows = [{"wave": 0, "step": 0, "loss": None, "perplexity": baseline_perplexity, "sparsity": 0.0}]
    for r in records:
        if r.get("status") == "skipped":
            continue
        for step, loss in enumerate(r["heal"]["loss"], start=1):
            rows.append({"wave": r["wave"], "step": step, "loss": loss, "perplexity": None, "sparsity": None})
        rows.append(
            {
                "wave": r["wave"],
                "step": r["heal"]["steps"],
                "loss": None,
                "perplexity": r["perplexity"],
                "sparsity": r["sparsity"],
            }
        )
    return rows


def curve_csv(rows: list[dict]) -> str:
    columns = ["wave", "step", "loss", "perplexity", "sparsity"]
    lines = [",".join(columns)]
    for row in rows:
        lines.append(",".join("" if row[c] is None else f"{row[c]:.6g}" for c in columns))
    return "\n".join(lines) + "\n"


def healing_figure(baseline_perplexity: float, records: list[dict]):
    """Three panels: heal loss per step (waves side by side), perplexity and sparsity per wave."""
    done = [r for r in records if r.get("status") != "skipped"]
    fig, (ax_loss, ax_ppl, ax_sp) = plt.subplots(1, 3, figsize=(13, 3.8))
    offset = 0
    for r in done:
        losses = r["heal"]["loss"]
        ax_loss.plot(range(offset + 1, offset + len(losses) + 1), losses, label=f"wave {r['wave']}")
        offset += len(losses)
    ax_loss.set(title="micro-heal loss", xlabel="heal step (all waves)", ylabel="loss (nats)")
    if offset:
        ax_loss.legend(fontsize=7)
    waves = [0] + [r["wave"] for r in done]
    ax_ppl.plot(waves, [baseline_perplexity] + [r["perplexity"] for r in done], marker="o")
    for r in done:
        if r["status"] != "accepted":
            ax_ppl.annotate(r["status"], (r["wave"], r["perplexity"]), fontsize=7)
    ax_ppl.set(title="perplexity per wave", xlabel="wave", ylabel="perplexity", yscale="log")
    ax_sp.plot(waves, [0.0] + [r["sparsity"] for r in done], marker="o")
    ax_sp.set(title="sparsity per wave", xlabel="wave", ylabel="sparsity of pruned layers")
    fig.tight_layout()
    return fig


def _ppl(value) -> str:
    return "-" if value is None else f"{value:.3f}"


def _budget_line(report: dict) -> str:
    b = report.get("budget")
    if not b:
        return "- Budget: none."
    judged = "Every wave is judged against it." if b["enforced"] else "Not enforced: stop-loss off."
    return (
        f"- Budget: perplexity at most {b['max_ppl_increase']:.1%} over the seed ({b['seed_perplexity']:.3f}); the "
        f"loop may use {b['budget_share']:.0%} of it, {b['loop_increase']:.2%} (ceiling {b['loop_ceiling']:.3f}), "
        f"the export the rest. {judged}"
    )


def _wave_row(r: dict) -> str:
    if r["status"] == "skipped":
        return f"| {r['wave']} | - | - | - | - | - | - | - | skipped | {r.get('reason', '')} | - |"
    losses = r["heal"]["loss"]
    heal_loss = f"{losses[0]:.3f} → {losses[-1]:.3f}" if losses else "-"
    delta = f"{r['delta']:+.2%}" if r.get("delta") is not None else "-"
    status = r["status"] + (f" → wave {r['reverted_to_wave']}" if r["status"] == "reverted" else "")
    before = r.get("before_heal") or {}
    evaluation = f"{_ppl(before.get('evaluation'))} → {r['perplexity']:.3f}"
    second_before = f"{_ppl(r.get('second_previous_perplexity'))} / {_ppl(before.get('second'))}"
    second = f"{second_before} → {_ppl(r.get('second_perplexity'))}"
    return (
        f"| {r['wave']} | {r['sparsity']:.4f} | {evaluation} | {delta} | {second} | {r['heal']['steps']} | "
        f"{heal_loss} | {r['regrown_fraction']:.2%} | {status} | {r.get('reason', '')} | {r['seconds']:.0f} |"
    )


def _method(prune: dict) -> str:
    """What each wave removes: neurons for structured pruning, a sparsity target and pattern for masks."""
    if prune["method"] == "structured":
        fraction = prune.get("structured", {}).get("fraction")
        share = f", {fraction:.0%} of the MLP width per wave" if fraction is not None else ""
        return f"structured (MLP neurons{share})"
    return f"{prune['method']} ({prune['pattern']}), target sparsity {prune['target_sparsity']}"


def render_loop_report(report: dict) -> str:
    """Markdown: the budget, then per wave sparsity, perplexity on both texts (after pruning → after
    healing), delta, heal steps, regrown fraction, verdict and why, time; then the checkpoint passed on."""
    base = report["baseline_perplexity"]
    lines = [
        f"# bird-bone growth-prune-heal report: {_method(report['prune'])} over {report['prune']['waves']} wave(s)",
        "",
        f"- Model: `{report['model']}`. Dense perplexity {base:.3f} on {report['eval_windows']} evaluation windows"
        f"; second domain {_ppl(report.get('baseline_second_perplexity'))}.",
        f"- Heal: {report['heal']['steps'] if report['heal']['enabled'] else 0} steps per wave, "
        f"{'QLoRA (NF4 base)' if report['heal']['base'] == 'nf4' else 'LoRA (full-precision base)'}, "
        f"rank {report['heal']['rank']}, on {report['heal'].get('data', 'calibration')}, KD weight "
        f"{report['heal']['kd_weight']}, LM weight {report['heal'].get('lm_weight', 1.0)}.",
        f"- Stop-loss: {'on' if report['stop_loss']['enabled'] else 'off'}, max rise "
        f"{report['stop_loss']['max_ppl_increase']:.1%} per wave, patience {report['stop_loss']['patience']}.",
        _budget_line(report),
        "",
        "Perplexity: evaluation text after pruning → after healing; second domain: before the wave / after "
        "pruning → after healing.",
        "",
        "| wave | sparsity | perplexity | delta | second domain | heal steps | heal loss first → last | regrown "
        "| status | why | seconds |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
        *[_wave_row(r) for r in report["waves"]],
    ]
    final = report["final"]
    lines += [
        "",
        f"Passed on: wave {final['wave']} ({final['status']}, `{final.get('checkpoint', '?')}`), sparsity "
        f"{final['sparsity']:.4f}, perplexity {final['perplexity']:.3f} ({final['perplexity'] / base - 1:+.2%} "
        f"against dense), second domain {_ppl(final.get('second_perplexity'))}.",
    ]
    if "neurons_removed" in final:
        lines.append(f"MLP neurons removed: {final['neurons_removed']:.2%}; widths {final['mlp_widths']}.")
    if report.get("gguf_warning"):
        lines.append(f"Warning for a GGUF export: {report['gguf_warning']}.")
    if report.get("stop_loss_acted"):
        s = report["stop_loss_acted"]
        lines.append(
            f"Stop-loss acted at wave {s['wave']} (perplexity {s['perplexity']:.3f}): {s.get('reason')}; reverted to "
            f"wave {s['reverted_to_wave']} (perplexity {s['accepted_perplexity']:.3f}) and stopped pruning."
        )
    return "\n".join(lines) + "\n"
