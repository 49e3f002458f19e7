"""Benchmark: streamed Wanda 50 % and streamed Q4_0 GGUF export of random LLaMA models of 0.1-3 B parameters.

    .venv/bin/python benchmarks/scale.py [--sizes 0.1B,0.5B,1B,3B] [--dir data/scale] [--extra structured,activations]

Each model is random (normal, std 0.02; norms 1), LLaMA architecture, with the embedded SmolLM2's
tokenizer (49,152 tokens, tied embeddings), stored once as bf16 safetensors (one shard per layer)
under ``--dir`` (ignored by git), written layer by layer so that writing the 3B one holds one layer.
Every measurement runs in a child process that reports its own peak resident set
(``getrusage(RUSAGE_SELF).ru_maxrss``, file pages mapped at that moment included) and wall seconds:
Wanda 50 % streamed (``bird_bone.prune.streamed.stream_prune``, true-sequential, 4 calibration
windows of 128 random tokens, seed 0), then the Q4_0 GGUF export of the pruned checkpoint streamed
(``bird_bone.export.gguf_stream.write_gguf_streamed``). Seconds per billion parameters divide by
every parameter of the model, the embedding included. The pruned outputs are deleted after use.
``--extra`` also times other streamed stages on the same model and windows, one more table row each:
``structured`` (20 % of the MLP neurons, ``stream_remove_neurons``), ``activations`` (statistics
without Gram matrices, ``stream_activations``), ``novaq`` (stages 1-2, Hessian-aware, ``stream_novaq``;
slow: k-means per matrix).
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
SIZES = {  # hidden, MLP width, layers, heads, KV heads (about the named number of parameters)
    "0.1B": (768, 2048, 10, 12, 4),
    "0.5B": (1280, 3584, 24, 20, 4),
    "1B": (2048, 5632, 20, 32, 8),
    "3B": (3072, 8192, 28, 24, 8),
}
HEADER = [
    "| model | parameters | bf16 GB | Wanda 50 % s | s / B params | peak RSS GB | Q4_0 export s | s / B params "
    "| peak RSS GB | GGUF MB |",
    "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
]


def llama_config(size: str, vocab: int):
    from transformers import LlamaConfig

    hidden, width, layers, heads, kv = SIZES[size]
    return LlamaConfig(
        vocab_size=vocab, hidden_size=hidden, intermediate_size=width, num_hidden_layers=layers,
        num_attention_heads=heads, num_key_value_heads=kv, max_position_embeddings=2048,
        tie_word_embeddings=True, bos_token_id=1, eos_token_id=2, dtype="bfloat16",
    )  # fmt: skip


@torch.no_grad()
def write_random_model(directory: Path, size: str, tokenizer) -> None:
    """A random bf16 checkpoint, one layer in memory at a time (skipped when its index exists)."""
    from bird_bone.io.sharded import INDEX, ShardWriter
    from bird_bone.models.streaming import empty_model

    if (directory / INDEX).is_file():
        return
    directory.mkdir(parents=True, exist_ok=True)
    llama_config(size, len(tokenizer)).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    model = empty_model(directory)
    layers = model.model.layers
    writer = ShardWriter(directory, len(layers) + 1)
    generator = torch.Generator().manual_seed(0)

    def random(prefix: str, module) -> dict[str, torch.Tensor]:
        return {
            f"{prefix}.{k}": torch.ones(v.shape) if v.ndim == 1 else torch.randn(v.shape, generator=generator) * 0.02
            for k, v in module.state_dict().items()
        }

    for index, layer in enumerate(layers):
        writer.write(index, {k: v.bfloat16() for k, v in random(f"model.layers.{index}", layer).items()})
    rest = {**random("model.embed_tokens", model.model.embed_tokens), **random("model.norm", model.model.norm)}
    writer.write(len(layers), {k: v.bfloat16() for k, v in rest.items()})
    writer.finish(directory)


EXTRA = ("structured", "activations", "novaq")


def extra_stage(task: str, source: Path, out: Path, windows: torch.Tensor) -> dict:
    """One of the ``--extra`` streamed stages; what it reports."""
    if task == "structured":
        from bird_bone.prune.streamed_structured import stream_remove_neurons

        kept = stream_remove_neurons(source, out, windows, 0.2, batch_size=4)
        return {"mlp_width": min(len(index) for index in kept.values())}
    if task == "activations":
        from bird_bone.calibration.activations_streamed import stream_activations

        return {"files": len(stream_activations(source, out, windows, batch_size=4)["files"])}
    from bird_bone.quant.config import NovaqConfig
    from bird_bone.quant.streamed import stream_novaq

    accounting = stream_novaq(source, out, NovaqConfig(), windows, batch_size=4)
    return {"bits_per_weight": accounting["quantized_bits_per_weight"]}


def child(task: str, source: Path, out: Path) -> dict:
    """One measurement in this process: its seconds and peak resident set."""
    start = time.perf_counter()
    windows = torch.randint(0, 49152, (4, 128), generator=torch.Generator().manual_seed(0))
    if task == "prune":
        from bird_bone.prune.streamed import stream_prune

        result = {"sparsity": stream_prune(source, out, "wanda", 0.5, windows, true_sequential=True)["sparsity"]}
    elif task in EXTRA:
        result = extra_stage(task, source, out, windows)
    else:
        from bird_bone.export.gguf_stream import write_gguf_streamed

        result = {"bytes": write_gguf_streamed(source, out, "Q4_0").size_bytes}
    result["seconds"] = time.perf_counter() - start
    result["peak_rss_bytes"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return result


def run_child(task: str, source: Path, out: Path) -> dict:
    command = [sys.executable, __file__, "--child", task, str(source), str(out)]
    done = subprocess.run(command, check=True, capture_output=True, text=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def measure_extra(size: str, directory: Path, tasks: list[str]) -> list[str]:
    """Rows of the ``--extra`` table for one model: seconds, s / B params, peak RSS."""
    from bird_bone.models.streaming import empty_model

    source = directory / size
    billions = sum(p.numel() for p in empty_model(source).parameters()) / 1e9
    rows = []
    for task in tasks:
        out = directory / f"{size}-{task}"
        shutil.rmtree(out, ignore_errors=True)
        result = run_child(task, source, out)
        shutil.rmtree(out, ignore_errors=True)
        rows.append(
            f"| random LLaMA {size} | {task} | {result['seconds']:.1f} | {result['seconds'] / billions:.1f} "
            f"| {result['peak_rss_bytes'] / 1e9:.2f} |"
        )
    return rows


def measure(size: str, directory: Path, tokenizer) -> str:
    source = directory / size
    write_random_model(source, size, tokenizer)
    from bird_bone.models.streaming import empty_model

    parameters = sum(p.numel() for p in empty_model(source).parameters())
    stored = sum(p.stat().st_size for p in source.glob("*.safetensors"))
    pruned, gguf = directory / f"{size}-wanda", directory / f"{size}-wanda-q4_0.gguf"
    shutil.rmtree(pruned, ignore_errors=True)
    prune = run_child("prune", source, pruned)
    export = run_child("export", pruned, gguf)
    shutil.rmtree(pruned, ignore_errors=True)
    gguf.unlink(missing_ok=True)
    billions = parameters / 1e9
    return (
        f"| random LLaMA {size} | {parameters / 1e9:.3f} B | {stored / 1e9:.2f} | {prune['seconds']:.1f} "
        f"| {prune['seconds'] / billions:.1f} | {prune['peak_rss_bytes'] / 1e9:.2f} | {export['seconds']:.1f} "
        f"| {export['seconds'] / billions:.1f} | {export['peak_rss_bytes'] / 1e9:.2f} | {export['bytes'] / 1e6:.0f} |"
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", default=",".join(SIZES), help=f"comma-separated, of {', '.join(SIZES)}")
    p.add_argument("--dir", type=Path, default=ROOT / "data" / "scale", help="where the models are kept")
    p.add_argument("--drop-sources", action="store_true", help="delete each random model once measured (disk)")
    p.add_argument("--extra", default="", help=f"also time these streamed stages, of {', '.join(EXTRA)}")
    p.add_argument("--child", nargs=3, metavar=("TASK", "SOURCE", "OUT"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        task, source, out = args.child
        print(json.dumps(child(task, Path(source), Path(out))))
        return 0
    extra = [task for task in args.extra.split(",") if task]
    unknown = sorted(set(extra) - set(EXTRA))
    if unknown:
        p.error(f"--extra: unknown stage {unknown[0]!r} (choose from {', '.join(EXTRA)})")
    from bird_bone.models.loading import load_model

    tokenizer = load_model("smollm2-135m").tokenizer
    print("\n".join(HEADER), flush=True)
    extra_rows = []
    for size in args.sizes.split(","):
        print(measure(size, args.dir, tokenizer), flush=True)
        extra_rows += measure_extra(size, args.dir, extra)
        if args.drop_sources:
            shutil.rmtree(args.dir / size, ignore_errors=True)
    if extra_rows:
        print("\n| model | stage | s | s / B params | peak RSS GB |\n| --- | --- | --- | --- | --- |", flush=True)
        print("\n".join(extra_rows), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
