"""Benchmark: the two calibration orders of Wanda and SparseGPT, across calibration seeds and texts.

    .venv/bin/python benchmarks/prune_order.py                          # Wanda 2:4, seeds 0 1 2 (~20 min)
    .venv/bin/python benchmarks/prune_order.py --rows wanda-50 sparsegpt-50 sparsegpt-2:4 --seeds 0

For each row and calibration seed, the embedded model is pruned twice, once in the reference order
(every linear of a layer calibrated on the dense layer's inputs) and once true-sequentially (each
linear calibrated on the already-pruned linears before it), and each result is evaluated on three
texts: WikiText-2 raw test windows 0-31 (issue 3's protocol), windows 32-63 of the same text, and
the first 32 windows of the TinyStories validation slice (all 512 tokens). Calibration: 32 x 512
windows drawn with ``random.seed(seed)`` from tokenized WikiText-2 validation; 2 threads. This is
the measurement behind ``bird_bone.prune.layerwise.auto_true_sequential``. Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

from prune import MALLOC_TUNING, SHARED  # benchmarks/prune.py, beside this script

ROWS = {
    "wanda-50": ("wanda", 0, 0),
    "wanda-2:4": ("wanda", 2, 4),
    "sparsegpt-50": ("sparsegpt", 0, 0),
    "sparsegpt-2:4": ("sparsegpt", 2, 4),
}
TEXTS = ("WikiText-2 test 0-31", "WikiText-2 test 32-63", "TinyStories 0-31")


def run_one(row: str, order: str, seed: int, threads: int) -> dict:
    import torch

    from bird_bone.data.windows import calibration_windows, evaluation_windows, tokenize_text
    from bird_bone.eval.perplexity import perplexity
    from bird_bone.models.loading import load_model
    from bird_bone.prune.layerwise import prune_layers

    torch.set_num_threads(threads)
    method, n, m = ROWS[row]
    model, tokenizer, _ = load_model("smollm2-135m")
    calibration = calibration_windows(
        tokenize_text(tokenizer, (SHARED / "wikitext2-valid-tokenized.txt").read_text()), 512, 32, seed=seed
    )
    wikitext = evaluation_windows(tokenize_text(tokenizer, (SHARED / "wikitext2-raw-test.txt").read_text()), 512, 64)
    stories = evaluation_windows(tokenize_text(tokenizer, (SHARED / "tinystories-valid.txt").read_text()), 512, 32)
    start = time.perf_counter()
    prune_layers(model, method, 0.5, calibration, n, m, batch_size=4, true_sequential=order == "true-sequential")
    seconds = time.perf_counter() - start
    texts = (wikitext[:32], wikitext[32:], stories)
    return {
        "seconds": seconds,
        "perplexities": [perplexity(model, w, batch_size=4, progress=False).perplexity for w in texts],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", nargs="*", default=["wanda-2:4"], choices=list(ROWS))
    parser.add_argument("--seeds", nargs="*", type=int, default=[0, 1, 2])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--one", nargs=3, help=argparse.SUPPRESS)  # internal: row order seed, print JSON
    args = parser.parse_args(argv)
    if args.one:
        row, order, seed = args.one
        print(json.dumps(run_one(row, order, int(seed), args.threads)))
        return 0
    if not SHARED.is_dir():
        parser.error(f"evaluation data not found: {SHARED} (see ../shared/data/README)")
    env = {**MALLOC_TUNING, **os.environ}
    header = ["row", "seed", *(f"{t}: reference / true-seq." for t in TEXTS), "seconds: reference / true-seq."]
    print("| " + " | ".join(header) + " |\n" + "| --- " * len(header) + "|", flush=True)
    for row in args.rows:
        for seed in args.seeds:
            results = {}
            for order in ("reference", "true-sequential"):
                command = [sys.executable, __file__, "--threads", str(args.threads), "--one", row, order, str(seed)]
                done = subprocess.run(command, capture_output=True, text=True, check=True, env=env)
                results[order] = json.loads(done.stdout.strip().splitlines()[-1])
            ref, seq = results["reference"], results["true-sequential"]
            cells = [
                f"{a:.2f} / {b:.2f} ({100 * (b / a - 1):+.1f} %)"
                for a, b in zip(ref["perplexities"], seq["perplexities"])
            ]
            seconds = f"{ref['seconds']:.1f} / {seq['seconds']:.1f}"
            print(f"| {row} | {seed} | " + " | ".join(cells) + f" | {seconds} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
