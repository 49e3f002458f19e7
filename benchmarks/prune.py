"""Benchmark: every pruning method and pattern on the embedded model, one process per row.

    .venv/bin/python benchmarks/prune.py                 # all rows (about 15 minutes on 2 cores)
    .venv/bin/python benchmarks/prune.py --rows wanda-50 sparsegpt-2:4 --eval-windows 8
    .venv/bin/python benchmarks/prune.py --order reference   # every linear calibrated on the dense layer

Protocol (issue 3): evaluation on the first 32 non-overlapping windows of 512 tokens of WikiText-2
raw test, tokenized once with the model's tokenizer, perplexity = exp(total NLL / predicted tokens);
calibration: 32 windows of 512 tokens drawn with random.seed(0) from the tokenized WikiText-2
validation text; 2 threads; decoder-layer linears only (embeddings and head dense). Each row runs in
its own process so its peak memory (RSS high-water mark) is its own. Prints a Markdown table.
``--order``: ``true-sequential`` calibrates each linear on the already-pruned linears before it in
its layer (one forward per layer); ``reference`` calibrates every linear of a layer on the dense
layer's inputs, as the reference codes do (about 1.8 forwards per layer); ``auto`` (default, as the
pipeline) is true-sequential except for Wanda N:M (``bird_bone.prune.layerwise.auto_true_sequential``).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
MALLOC_TUNING = {"MALLOC_MMAP_THRESHOLD_": "4000000000", "MALLOC_TRIM_THRESHOLD_": "8000000000"}  # as the Makefile
ROWS = {
    "magnitude-50": ("magnitude", 0.5, "unstructured"),
    "wanda-50": ("wanda", 0.5, "unstructured"),
    "wanda-2:4": ("wanda", 0.5, "2:4"),
    "sparsegpt-50": ("sparsegpt", 0.5, "unstructured"),
    "sparsegpt-2:4": ("sparsegpt", 0.5, "2:4"),
    "structured-20": ("structured", 0.2, "neurons"),
}


def structured_speedups(model, evaluation, repeats: int) -> dict[str, float]:
    """Forward speed-up of ``model`` over a freshly loaded dense copy, with full logits (``speedup_0``,
    as perplexity) and for prefill (``speedup_1``, the last position's logits). The two models are
    timed in turn, ``repeats`` times each, and the best of each is kept (as timeit does): this VM's
    throughput drifts by 10-20 % between passes."""
    from bird_bone.eval.speed import forward_throughput
    from bird_bone.models.loading import load_model

    dense = load_model("smollm2-135m").model
    best: dict[tuple[str, int], float] = {}
    for _ in range(repeats):
        for keep in (0, 1):
            for name, candidate in (("dense", dense), ("pruned", model)):
                tokens_per_second = forward_throughput(candidate, evaluation, 4, 2, keep)["tokens_per_second"]
                best[name, keep] = max(best.get((name, keep), 0.0), tokens_per_second)
    return {f"speedup_{keep}": best["pruned", keep] / best["dense", keep] for keep in (0, 1)}


def run_row(row: str, eval_windows: int, threads: int, order: str, width_multiple: int, speed_repeats: int) -> dict:
    import torch

    from bird_bone.data.windows import calibration_windows, evaluation_windows, tokenize_text
    from bird_bone.eval.perplexity import perplexity
    from bird_bone.models.adapters import mlp_widths
    from bird_bone.models.loading import load_model
    from bird_bone.prune.layerwise import auto_true_sequential, mask_sparsity, prune_layers
    from bird_bone.prune.structured import remove_neurons

    torch.set_num_threads(threads)
    method, sparsity, pattern = ROWS[row]
    model, tokenizer, _ = load_model("smollm2-135m")
    calibration = calibration_windows(
        tokenize_text(tokenizer, (SHARED / "wikitext2-valid-tokenized.txt").read_text()), 512, 32, seed=0
    )
    evaluation = evaluation_windows(
        tokenize_text(tokenizer, (SHARED / "wikitext2-raw-test.txt").read_text()), 512, eval_windows
    )
    start = time.perf_counter()
    true_sequential = False
    if method == "structured":  # two waves of 10 %, each cluster giving at most 15 % per wave
        kept = remove_neurons(model, calibration, 0.1, 0.15, batch_size=8, width_multiple=width_multiple)
        remove_neurons(model, calibration, 0.2, 0.15, batch_size=8, kept=kept, width_multiple=width_multiple)
        widths = mlp_widths(model)
        achieved = 1 - sum(widths) / (len(widths) * model.config.intermediate_size)
    else:
        n, m = (2, 4) if pattern == "2:4" else (0, 0)
        true_sequential = order == "true-sequential" or (order == "auto" and auto_true_sequential(method, n, m))
        masks = prune_layers(model, method, sparsity, calibration, n, m, batch_size=4, true_sequential=true_sequential)
        achieved = mask_sparsity(masks)
    seconds = time.perf_counter() - start
    ppl = perplexity(model, evaluation, batch_size=4, progress=False)
    result = {
        "row": row,
        "method": method,
        "pattern": pattern,
        "seconds": seconds,
        "perplexity": ppl.perplexity,
        "sparsity": achieved,
        "order": "-" if method in ("magnitude", "structured") else ("true-seq." if true_sequential else "reference"),
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }
    if method == "structured":  # after the peak-memory reading: it loads a second, dense model
        result.update(structured_speedups(model, evaluation, speed_repeats))
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", nargs="*", default=list(ROWS), choices=list(ROWS))
    parser.add_argument("--eval-windows", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--order", choices=["auto", "true-sequential", "reference"], default="auto", help="calibration order"
    )
    parser.add_argument("--width-multiple", type=int, default=64, help="structured: kept MLP widths rounded down")
    parser.add_argument("--speed-repeats", type=int, default=3, help="structured: timed passes per model (best kept)")
    parser.add_argument(
        "--default-malloc", action="store_true", help="leave glibc's malloc settings alone (see MALLOC_TUNING)"
    )
    parser.add_argument("--one", help=argparse.SUPPRESS)  # internal: run one row, print JSON
    args = parser.parse_args(argv)
    if args.one:
        result = run_row(args.one, args.eval_windows, args.threads, args.order, args.width_multiple, args.speed_repeats)
        print(json.dumps(result))
        return 0
    header = [
        "row",
        "calibration order",
        "sparsity achieved (structured: neurons removed)",
        f"perplexity ({args.eval_windows} x 512)",
        "pruning time (s)",
        "peak RSS (MiB)",
        "forward speed-up (full logits / prefill)",
        "load average (start, end)",
    ]
    env = dict(os.environ)
    if not args.default_malloc:  # as `make run`: keep freed memory instead of page-faulting it back
        for key, value in MALLOC_TUNING.items():
            env.setdefault(key, value)
    print(", ".join(f"{k}={env.get(k, 'unset')}" for k in MALLOC_TUNING) + "\n", flush=True)
    print("| " + " | ".join(header) + " |\n" + "| --- " * len(header) + "|", flush=True)
    for row in args.rows:
        load_start = os.getloadavg()[0]
        command = [
            sys.executable,
            __file__,
            "--one",
            row,
            "--eval-windows",
            str(args.eval_windows),
            "--threads",
            str(args.threads),
            "--width-multiple",
            str(args.width_multiple),
            "--speed-repeats",
            str(args.speed_repeats),
            "--order",
            args.order,
        ]
        done = subprocess.run(command, capture_output=True, text=True, check=True, env=env)
        r = json.loads(done.stdout.strip().splitlines()[-1])
        speed = f"{r['speedup_0']:.2f}x / {r['speedup_1']:.2f}x" if "speedup_0" in r else "-"
        print(
            f"| {row} | {r['order']} | {r['sparsity']:.4f} | {r['perplexity']:.2f} | {r['seconds']:.1f} "
            f"| {r['peak_rss_mib']:.0f} | {speed} | {load_start:.1f}, {os.getloadavg()[0]:.1f} |",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
