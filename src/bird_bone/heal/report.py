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


def render_loop_report(report: dict) -> str:
    """Markdown: per wave sparsity, perplexity, delta, heal steps, regrown fraction, status, time."""
    base = report["baseline_perplexity"]
    lines = [
        f"# bird-bone growth-prune-heal report: {report['prune']['method']} ({report['prune']['pattern']}), "
        f"target sparsity {report['prune']['target_sparsity']} over {report['prune']['waves']} wave(s)",
        "",
        f"- Model: `{report['model']}`. Dense perplexity {base:.3f} on {report['eval_windows']} evaluation windows.",
        f"- Heal: {report['heal']['steps'] if report['heal']['enabled'] else 0} steps per wave, "
        f"{'QLoRA (NF4 base)' if report['heal']['base'] == 'nf4' else 'LoRA (full-precision base)'}, "
        f"rank {report['heal']['rank']}, KD weight {report['heal']['kd_weight']}.",
        f"- Stop-loss: {'on' if report['stop_loss']['enabled'] else 'off'}, max rise "
        f"{report['stop_loss']['max_ppl_increase']:.1%} per wave, patience {report['stop_loss']['patience']}.",
        "",
        "| wave | sparsity | perplexity | delta | heal steps | heal loss first → last | regrown | status | seconds |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in report["waves"]:
        if r["status"] == "skipped":
            lines.append(f"| {r['wave']} | - | - | - | - | - | - | skipped ({r.get('reason', '')}) | - |")
            continue
        losses = r["heal"]["loss"]
        heal_loss = f"{losses[0]:.3f} → {losses[-1]:.3f}" if losses else "-"
        delta = f"{r['delta']:+.2%}" if r.get("delta") is not None else "-"
        status = r["status"] + (f" → wave {r['reverted_to_wave']}" if r["status"] == "reverted" else "")
        lines.append(
            f"| {r['wave']} | {r['sparsity']:.4f} | {r['perplexity']:.3f} | {delta} | {r['heal']['steps']} | "
            f"{heal_loss} | {r['regrown_fraction']:.2%} | {status} | {r['seconds']:.0f} |"
        )
    final = report["final"]
    lines += [
        "",
        f"Final model: wave {final['wave']} ({final['status']}), sparsity {final['sparsity']:.4f}, "
        f"perplexity {final['perplexity']:.3f} ({final['perplexity'] / base - 1:+.2%} against dense).",
    ]
    if report.get("stop_loss_acted"):
        s = report["stop_loss_acted"]
        lines.append(
            f"Stop-loss acted at wave {s['wave']}: perplexity {s['perplexity']:.3f} made {s['strikes']} "
            f"consecutive waves rising by more than {report['stop_loss']['max_ppl_increase']:.1%}; reverted to wave "
            f"{s['reverted_to_wave']} (perplexity {s['accepted_perplexity']:.3f}) and stopped pruning."
        )
    return "\n".join(lines) + "\n"
