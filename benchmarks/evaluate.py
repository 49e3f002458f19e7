"""Benchmark: load time, WikiText-2 perplexity, forward tokens/s and peak memory of a model.

    .venv/bin/python benchmarks/evaluate.py [--model smollm2-135m] [--windows 32] [--window-length 512]
        [--cold]   # convert the GGUF afresh (temporary cache) instead of reusing the converted cache

Protocol (../shared/data/README.md): WikiText-2 raw test tokenized once (no BOS), first N
non-overlapping windows, perplexity = exp(total NLL / total predicted tokens). Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
from pathlib import Path

import torch

from bird_bone.data.text import load_text
from bird_bone.data.windows import evaluation_windows, tokenize_text
from bird_bone.eval.perplexity import perplexity
from bird_bone.eval.speed import forward_throughput, parameter_count
from bird_bone.models.loading import load_model

DEFAULT_TEXT = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "wikitext2-raw-test.txt"


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--text", default=str(DEFAULT_TEXT))
    parser.add_argument("--windows", type=int, default=32)
    parser.add_argument("--window-length", type=int, default=512)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--cold", action="store_true", help="convert the GGUF afresh in a temporary cache")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as cache:
        model, tokenizer, provenance = load_model(args.model, cache_dir=cache if args.cold else None)
    load_seconds = time.perf_counter() - start
    text, source = load_text(args.text, fallback=None)
    windows = evaluation_windows(tokenize_text(tokenizer, text), args.window_length, args.windows)
    ppl = perplexity(model, windows, batch_size=args.batch_size)
    speed = forward_throughput(model, windows, batch_size=args.batch_size, batches=2)

    rows = [
        ("model", f"{provenance.spec} ({provenance.description or provenance.kind})"),
        ("text", f"{source.location} ({args.windows} windows x {args.window_length} tokens)"),
        ("parameters", f"{parameter_count(model)['parameters']:,}"),
        ("threads", str(args.threads)),
        ("load time" + (" (cold: GGUF conversion)" if args.cold else " (converted cache)"), f"{load_seconds:.1f} s"),
        ("perplexity", f"{ppl.perplexity:.3f}"),
        ("perplexity time", f"{ppl.seconds:.1f} s"),
        ("forward tokens/s", f"{speed['tokens_per_second']:.0f} (batch {args.batch_size} x {args.window_length})"),
        ("peak memory (RSS)", f"{peak_rss_mib():.0f} MiB"),
    ]
    print("| measure | value |\n| --- | --- |")
    for name, value in rows:
        print(f"| {name} | {value} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
