"""Benchmark: compressed-tensors exports (vLLM / llm-compressor format) of the embedded model,
scored in transformers, the runtime this machine has (vLLM needs a GPU and cannot run here).

    .venv/bin/python benchmarks/compressed.py [--windows 32] [--schemes dense,W8A8,W8A16,W4A16] [--ckpt DIR]

Protocol: WikiText-2 raw test and the TinyStories slice, each tokenized once (no BOS, as SmolLM2's
tokenizer adds none), first N non-overlapping windows of 512 tokens, mean token NLL, exp. Each export
is written to a temporary directory, loaded back with transformers (``dequantize=False``:
compressed-tensors' own quantized forward, so W8A8 also quantizes activations per token), and
scored. Bytes: the files of the directory (safetensors + config; tokenizer files excluded). The
embedded model is SmolLM2-135M-Instruct stored as a 4-bit Q4_1 GGUF and dequantized to float32:
every figure is relative to those weights, and RTN 4-bit re-rounds weights that already sat on a
Q4_1 grid of 32-column blocks.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import torch

from bird_bone.data.windows import evaluation_windows, tokenize_text
from bird_bone.eval.perplexity import perplexity
from bird_bone.export.compressed import EXPORT_SCHEMES, export_compressed, load_compressed
from bird_bone.io.checkpoint import load_checkpoint
from bird_bone.models.loading import load_model

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
TEXTS = {"WikiText-2": "wikitext2-raw-test.txt", "TinyStories": "tinystories-valid.txt"}


def weight_bytes(path: Path) -> int:
    return sum(
        p.stat().st_size for p in path.iterdir() if p.suffix in (".safetensors", ".json") and "token" not in p.name
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--windows", type=int, default=32)
    p.add_argument("--schemes", default=",".join(EXPORT_SCHEMES))
    p.add_argument("--ckpt", type=Path, help="a bird-bone checkpoint (default: the embedded model)")
    args = p.parse_args(argv)
    if not DATA.is_dir():
        print(f"benchmark needs {DATA}", file=sys.stderr)
        return 1
    if args.ckpt:
        checkpoint = load_checkpoint(args.ckpt)
        model, tokenizer = checkpoint.model, checkpoint.tokenizer
    else:
        loaded = load_model("smollm2-135m")
        model, tokenizer = loaded.model, loaded.tokenizer
    texts = {
        name: evaluation_windows(tokenize_text(tokenizer, (DATA / file).read_text()), 512, args.windows, name)
        for name, file in TEXTS.items()
    }
    print(f"| artifact | MiB | {' | '.join(f'{n} ppl' for n in texts)} |")
    print(f"| --- | --- | {' | '.join('---' for _ in texts)} |")
    params = sum(p.numel() for p in model.parameters())
    row = [f"{perplexity(model, w, 4, progress=False).perplexity:.3f}" for w in texts.values()]
    print(f"| input (float32 in memory) | {4 * params / 2**20:.1f} | {' | '.join(row)} |", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        for scheme in args.schemes.split(","):
            out = Path(tmp) / scheme
            result = export_compressed(model, tokenizer, out, scheme)
            loaded = load_compressed(out, dtype=torch.float32, dequantize=False)
            row = [f"{perplexity(loaded, w, 4, progress=False).perplexity:.3f}" for w in texts.values()]
            label = f"{scheme} (group {result.group_size})" if result.group_size else scheme
            print(f"| {label}, {result.sparsity_structure} | {weight_bytes(out) / 2**20:.1f} | {' | '.join(row)} |",
                  flush=True)  # fmt: skip
            del loaded
    return 0


if __name__ == "__main__":
    sys.exit(main())
