"""Benchmark: file bytes against llama.cpp perplexity on two texts, bird-bone's mixed GGUFs beside the
input file and llama.cpp's own quantizer with importance matrix (and AutoRound's GGUFs, when present).

    .venv/bin/python benchmarks/pareto.py [--model smollm2-135m] [--windows 32] [--out data/08_reporting/pareto]
    .venv/bin/python benchmarks/pareto.py --only input,Q8_0,Q6_K   # just these rows; the rest from rows.json
    .venv/bin/python benchmarks/pareto.py --gguf models/export.gguf  # add make run's artifact as a row

Protocol: WikiText-2 raw test and the TinyStories slice, each tokenized once, BOS first where the
tokenizer adds one, the first N non-overlapping windows of 512 tokens, scored in llama.cpp
(``llama_perplexity``: F32 KV cache, each window from an empty cache). Calibration: 32 random 512-token
windows of WikiText-2 validation (seed 0), never the evaluation windows: llama.cpp's importance matrix
is the sums of x^2 at every decoder linear's input over all 32, bird-bone's sensitivity (diagonal
K-FAC of the exported model) is measured on the first ``--sensitivity-windows`` of them. Mixed rows
are planned at the bytes of each peer file (equal or fewer bytes), of the input, and at ``--extra``
sizes; "mixed, budget" is the export node's choice: the smallest plan within 3 % of the dense
transformers perplexity on both texts (a candidate must meet both). Rows already in ``<out>/rows.json`` are reused
(``--only``: measure just the named rows, so a long run can be split into short ones).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import tempfile
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch

from bird_bone.data.windows import bos_token, calibration_windows, evaluation_windows, tokenize_text
from bird_bone.eval.llamacpp import llama_perplexity
from bird_bone.eval.perplexity import perplexity
from bird_bone.export.gguf_mixed import prepare, search
from bird_bone.export.imatrix import importance_matrix
from bird_bone.export.llamacpp_quantize import quantize_gguf
from bird_bone.models.loading import load_model

sys.path.insert(0, str(Path(__file__).resolve().parent))
from export import activation_statistics  # noqa: E402  (benchmarks/export.py)

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
TEXTS = {"wikitext2": "wikitext2-raw-test.txt", "tinystories": "tinystories-valid.txt"}
PEERS = ("Q8_0", "Q6_K", "Q5_K_M", "Q4_K_M", "Q3_K_M", "Q2_K", "IQ2_XXS")
AUTOROUND_SCHEMES = ["q4_k_m", "q3_k_m", "q2_k_s"]


@dataclass
class Row:
    method: str  # input | llama.cpp | bird-bone mixed | AutoRound
    label: str
    bytes: int
    perplexity: dict[str, float] = field(default_factory=dict)
    note: str = ""


def scores(path: Path, texts: dict[str, torch.Tensor]) -> dict[str, float]:
    return {name: llama_perplexity(path, windows, 2).perplexity for name, windows in texts.items()}


def autoround_rows(loaded, out: Path, kept: Path, texts) -> list[Row]:
    """AutoRound's GGUFs through benchmarks/autoround_peer.py, when it and auto_round are installed; the
    files are kept in ``kept`` (beside the rows file) and reused by later runs with the same settings."""
    here = Path(__file__).resolve().parent / "autoround_peer.py"
    if not here.is_file() or importlib.util.find_spec("auto_round") is None:
        why = "benchmarks/autoround_peer.py is absent" if not here.is_file() else "auto_round is not installed"
        print(f"AutoRound rows skipped: {why}", file=sys.stderr)
        return []
    from autoround_peer import autoround_ggufs

    hf_dir = out / "hf"
    loaded.model.save_pretrained(hf_dir)
    loaded.tokenizer.save_pretrained(hf_dir)
    files = autoround_ggufs(hf_dir, kept, AUTOROUND_SCHEMES)
    return [Row("AutoRound", f"gguf:{s}", p.stat().st_size, scores(p, texts)) for s, p in files.items()]


def measure(args, loaded, texts, calib, wanted, rows: dict[str, Row], out: Path) -> None:
    source = Path(loaded.provenance.location)

    def want(key: str) -> bool:  # --only: just those rows; otherwise every row not measured yet
        return key in wanted if wanted else key not in rows

    if source.suffix == ".gguf" and want("input"):
        rows["input"] = Row("input", source.name, source.stat().st_size, scores(source, texts))
        _report(rows["input"], rows, args.saved)
    if not wanted or any(k in PEERS or k.startswith("mixed") or k == "budget" for k in wanted):
        planned_rows(args, loaded, texts, calib, want, rows, out)
    for path in args.gguf:  # files made elsewhere (make run's models/export.gguf), scored the same way
        rows[f"file:{path.name}"] = Row("given file", str(path), path.stat().st_size, scores(path, texts))
        _report(rows[f"file:{path.name}"], rows, args.saved)
    for row in autoround_rows(loaded, out, args.saved.parent / "autoround", texts) if want("autoround") else []:
        rows[f"autoround-{row.label}"] = row


def planned_rows(args, loaded, texts, calib, want, rows: dict[str, Row], out: Path) -> None:
    """llama.cpp's quantizer with importance matrix, bird-bone's mixed plans and the budget search."""
    model, tok = loaded.model, loaded.tokenizer
    metadata = {"provenance": loaded.provenance.to_dict()}
    rounding = "gptq" if "gptq" in args.rounding else "imatrix"  # the Grams are measured only when needed
    planner = prepare(model, tok, calib[: args.sensitivity_windows], out, metadata, threads=2, rounding=rounding)
    imatrix = importance_matrix(activation_statistics(model, calib), model, tokens=calib.numel())
    for type in PEERS:
        if want(type):
            path = quantize_gguf(planner.f32, out / f"{type}.gguf", type, imatrix)
            rows[type] = Row("llama.cpp", f"{type} + imatrix", path.stat().st_size, scores(path, texts))
            path.unlink()
            _report(rows[type], rows, args.saved)
    targets = {k: r.bytes for k, r in rows.items() if r.method in ("input", "llama.cpp")}
    targets |= {f"{mb}MB": int(mb * 1e6) for mb in args.extra}
    for rounding in args.rounding:
        mixed_rows(replace(planner, grams={}, _rounded={}) if rounding == "imatrix" else planner, rounding, targets,
                   want, rows, texts, out, args.saved)  # fmt: skip
    if want("budget"):  # as the export node: the seed (dense) on both texts, a candidate must meet both
        dense = {name: perplexity(model, w, batch_size=2, progress=False).perplexity for name, w in texts.items()}
        found = search(planner, lambda p: scores(p, texts), dense, 0.03, out, steps=args.search_steps)
        path = Path(found.path)
        tried = "; ".join(f"{c.bytes}: " + " / ".join(f"{v:.3f}" for v in c.perplexities.values())
                          for c in found.candidates)  # fmt: skip
        shown = " / ".join(f"{v:.3f}" for v in dense.values())
        rows["budget"] = Row("bird-bone mixed, budget", "3 % over dense", path.stat().st_size,
                             found.chosen.perplexities, f"dense {shown}; {found.reason}; tried {tried}")  # fmt: skip
        path.unlink()
        _report(rows["budget"], rows, args.saved)


MIXED = {"imatrix": ("mixed@", "bird-bone mixed"), "gptq": ("mixed-gptq@", "bird-bone mixed, GPTQ rounding")}


def mixed_rows(planner, rounding: str, targets: dict[str, int], want, rows, texts, out: Path, saved) -> None:
    """bird-bone's plans at each target size, rounded by ``rounding`` (gptq | imatrix)."""
    prefix, method = MIXED[rounding]
    lo, _ = planner.bounds()
    for key, target in sorted(((prefix + k, t) for k, t in targets.items()), key=lambda kv: kv[1]):
        if target >= lo and want(key):
            plan = planner.plan(target)
            path = planner.write(plan, out / "mixed.gguf")
            note = ", ".join(f"{t}: {n}" for t, n in plan.counts.items())
            rows[key] = Row(method, key.removeprefix(prefix), path.stat().st_size, scores(path, texts), note)
            path.unlink()
            _report(rows[key], rows, saved)


def _report(row: Row, rows: dict[str, Row] | None = None, saved: Path | None = None) -> None:
    """Log ``row`` and save every row so far (a run cut short keeps what it measured)."""
    if saved is not None:
        saved.write_text(json.dumps({k: asdict(r) for k, r in rows.items()}, indent=1))
    ppl = ", ".join(f"{k} {v:.3f}" for k, v in row.perplexity.items())
    print(f"{row.method} {row.label}: {row.bytes:,} bytes, {ppl}", file=sys.stderr, flush=True)


def table(rows: list[Row], dense: dict[str, float] | None = None) -> str:
    names = list(TEXTS)
    lines = ["| method | file | bytes | " + " | ".join(f"{n} (llama.cpp)" for n in names) + " | note |",
             "| --- | --- | --- | " + " | ".join("---" for _ in names) + " | --- |"]  # fmt: skip
    for r in sorted(rows, key=lambda r: (r.bytes, r.method)):
        cells = [f"{r.perplexity.get(n, float('nan')):.3f}" for n in names]
        lines.append(f"| {r.method} | {r.label} | {r.bytes:,} | " + " | ".join(cells) + f" | {r.note} |")
    return "\n".join(lines)


def plot(rows: list[Row], path: Path, model: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(TEXTS), figsize=(11, 4.2))
    for ax, name in zip(axes, TEXTS):
        for method, marker in zip(dict.fromkeys(r.method for r in rows), "os^Dv*"):
            found = sorted((r for r in rows if r.method == method), key=lambda r: r.bytes)
            style = f"{marker}-" if len(found) > 1 and method != "llama.cpp" else marker
            ax.plot([r.bytes / 1e6 for r in found], [r.perplexity[name] for r in found], style, label=method, ms=6)
        ax.set(xlabel="file MB", ylabel="perplexity (llama.cpp)", title=f"{model}: {name}", yscale="log")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=80)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--windows", type=int, default=32)
    parser.add_argument("--out", type=Path, default=Path("data/08_reporting/pareto"))
    parser.add_argument(
        "--only",
        default="",
        help="row keys to measure (input, Q8_0 ..., mixed@Q4_K_M, mixed@67.0MB, budget, autoround)",
    )
    parser.add_argument("--extra", type=float, nargs="*", default=[67.0, 80.0, 90.0], help="more mixed sizes, MB")
    parser.add_argument("--gguf", type=Path, nargs="*", default=[], help="GGUF files to score as rows of their own")
    parser.add_argument("--sensitivity-windows", type=int, default=8)
    parser.add_argument("--search-steps", type=int, default=4)
    parser.add_argument("--rounding", nargs="+", choices=sorted(MIXED), default=["imatrix"],
                        help="how the mixed rows round re-quantized matrices (both: a row of each)")  # fmt: skip
    args = parser.parse_args(argv)
    out = args.out / args.model
    out.mkdir(parents=True, exist_ok=True)
    saved = args.saved = out / f"rows-{args.windows}.json"
    rows = {k: Row(**v) for k, v in json.loads(saved.read_text()).items()} if saved.is_file() else {}
    loaded = load_model(args.model)
    tok, bos = loaded.tokenizer, bos_token(loaded.tokenizer)
    texts = {n: evaluation_windows(tokenize_text(tok, (DATA / f).read_text()), 512, args.windows, bos=bos)
             for n, f in TEXTS.items()}  # fmt: skip
    calib_text = tokenize_text(tok, (DATA / "wikitext2-valid-tokenized.txt").read_text())
    calib = calibration_windows(calib_text, 512, 32, 0, bos=bos)
    with tempfile.TemporaryDirectory(prefix="bird_bone_pareto_") as tmp:
        measure(args, loaded, texts, calib, set(filter(None, args.only.split(","))), rows, Path(tmp))
    saved.write_text(json.dumps({k: asdict(r) for k, r in rows.items()}, indent=1))
    print(f"{args.model} (SmolLM2: Q4_1 weights dequantized), {args.windows} x 512 windows per text")
    print(table(list(rows.values())))
    plot(list(rows.values()), out / "pareto.png", args.model)
    print(f"plot: {out / 'pareto.png'}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    torch.set_num_threads(2)
    sys.exit(main())
