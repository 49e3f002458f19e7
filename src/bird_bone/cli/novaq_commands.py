"""What each ``novaq`` subcommand does (argument parsing and error handling are in ``novaq.py``)."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from bird_bone.config import ParameterError
from bird_bone.errors import BirdBoneError
from bird_bone.quant.config import NovaqConfig


def cache_dir() -> Path:
    """NOVAQ_CACHE_DIR, or ~/.cache/novaq: downloads and converted models."""
    base = os.environ.get("NOVAQ_CACHE_DIR")
    return Path(base).expanduser() if base else Path.home() / ".cache" / "novaq"


def load_params(config: Path | None, args: argparse.Namespace) -> NovaqConfig:
    """YAML file (a ``novaq:`` mapping or the bare keys), then the command-line flags on top."""
    import yaml

    values: dict = {}
    if config is not None:
        if not config.is_file():
            raise BirdBoneError(f"config file not found: {config}")
        try:
            loaded = yaml.safe_load(config.read_text()) or {}
        except yaml.YAMLError as exc:
            raise BirdBoneError(f"{config} is not valid YAML: {exc}") from None
        if not isinstance(loaded, dict):
            raise BirdBoneError(f"{config}: expected a mapping of NOVAQ parameters")
        values = dict(loaded.get("novaq", loaded))
    for flag in ("subspaces", "codebook_size", "residual_codebook_size", "outlier_threshold", "group_rows",
                 "group_cols", "hessian_aware", "teacher_model", "include_embeddings", "activation_aware"):  # fmt: skip
        if getattr(args, flag, None) is not None:
            values[flag] = getattr(args, flag)
    if getattr(args, "refine_steps", None) is not None:
        refine = dict(values.get("refine") or {})
        refine["max_iterations"] = args.refine_steps
        refine["enabled"] = args.refine_steps > 0
        values["refine"] = refine
    try:
        return NovaqConfig.model_validate(values)
    except ParameterError as exc:
        raise BirdBoneError(f"{config or 'command line'}: {exc}") from None


def resolve_source(args: argparse.Namespace) -> str:

    if args.command == "ollama":
        from bird_bone.models.ollama import resolve_ollama

        return str(resolve_ollama(args.source))
    if args.command == "url":
        from bird_bone.io.download import download

        return str(download(args.source, cache_dir() / "downloads", args.max_bytes, args.sha256,
                            progress=not args.no_progress))  # fmt: skip
    return args.source


def compress_command(args: argparse.Namespace) -> int:
    from bird_bone.data.text import load_text
    from bird_bone.data.windows import bos_token, calibration_windows, tokenize_text
    from bird_bone.export.novaq_format import write_novaq
    from bird_bone.models.loading import load_model
    from bird_bone.quant.run import compress

    params = load_params(args.config, args)
    spec = resolve_source(args)
    model, tokenizer, provenance = load_model(spec, cache_dir=cache_dir() / "models")
    teacher = load_model(params.teacher_model, cache_dir=cache_dir() / "models").model if params.teacher_model else None
    calibration = None
    if params.hessian_aware or params.activation_aware or (params.refine.enabled and params.refine.max_iterations):
        text, _ = load_text(args.calibration_text)
        tokens = tokenize_text(tokenizer, text)
        r = params.refine
        name, bos = args.calibration_text, bos_token(tokenizer)
        calibration = calibration_windows(tokens, r.window_length, r.calibration_windows, r.seed, name, bos)
    run = compress(model, params, calibration, teacher, progress=not args.no_progress)
    output = args.output or Path(f"{Path(args.source.rstrip('/')).name.split(':')[0] or 'model'}.novaq")
    extra = {"source": provenance.to_dict(), "refinement": run.report.get("refinement")}
    manifest = write_novaq(output, model, tokenizer, run.quantized, params.model_dump(), run.report["accounting"],
                           extra=extra, dense_dtype=params.dense_dtype)  # fmt: skip
    stats = manifest["statistics"]
    print(f"wrote {output}")
    print(
        f"  bits/weight: {stats['quantized_bits_per_weight']:.3f} (quantized layers), "
        f"{stats['total_bits_per_weight']:.3f} (whole model), {stats['shard_bits_per_weight']:.3f} (shards on disk)"
    )
    print(
        f"  compression vs fp16: {stats['compression_vs_fp16']:.2f}x (accounting), "
        f"{stats['compression_vs_fp16_on_disk']:.2f}x (on disk)"
    )
    if run.report.get("refinement"):
        losses = run.report["refinement"]["losses"]
        print(
            f"  refinement: {len(losses)} steps, loss {losses[0]:.4f} -> {losses[-1]:.4f}, "
            f"{run.report['refinement']['seconds']:.0f} s"
        )
    return 0


def validate_command(args: argparse.Namespace) -> int:
    from bird_bone.export.novaq_read import validate_novaq

    summary = validate_novaq(args.file)
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        print(
            f"OK {args.file}: {summary['files']} files hashed, {summary['tensors']} tensors decoded, "
            f"logits match on {summary['prompts']} prompts (max difference {summary['max_logit_difference']:.2g})"
        )
    return 0


def stats_command(args: argparse.Namespace) -> int:
    from bird_bone.export.novaq_read import load_manifest

    _, manifest = load_manifest(args.file)
    stats = manifest.get("statistics") or {}
    if args.json:
        print(json.dumps(stats, indent=2, sort_keys=True))
        return 0
    for key in sorted(stats):
        value = stats[key]
        if isinstance(value, dict):
            value = ", ".join(f"{k}={v}" for k, v in value.items())
        elif isinstance(value, float):
            value = f"{value:.4f}"
        print(f"{key}: {value}")
    return 0


def info_command(args: argparse.Namespace) -> int:
    from bird_bone.export.novaq_read import load_manifest

    root, manifest = load_manifest(args.file)
    tensors = manifest["tensors"]
    encodings: dict[str, int] = {}
    for entry in tensors.values():
        encodings[entry.get("encoding", "?")] = encodings.get(entry.get("encoding", "?"), 0) + 1
    info = {
        "path": str(root),
        "format": f"{manifest['format']} v{manifest['format_version']}",
        "model": manifest["model"].get("class"),
        "architecture": manifest["model"].get("config", {}).get("model_type"),
        "tensors": encodings,
        "files": len(manifest["files"]),
        "novaq": manifest.get("novaq"),
    }
    if args.json:
        print(json.dumps(info, indent=2))
    else:
        for key, value in info.items():
            print(f"{key}: {value}")
    return 0


def benchmark_command(args: argparse.Namespace) -> int:
    from bird_bone.data.text import load_text
    from bird_bone.data.windows import bos_token, evaluation_windows, tokenize_text
    from bird_bone.eval.perplexity import perplexity
    from bird_bone.eval.speed import forward_throughput
    from bird_bone.export.novaq_read import read_novaq
    from bird_bone.models.loading import load_model

    compressed, tokenizer, manifest = read_novaq(args.file)
    original = load_model(args.original_model, cache_dir=cache_dir() / "models")
    text, _ = load_text(args.text)
    tokens, bos = tokenize_text(original.tokenizer, text), bos_token(original.tokenizer)
    windows = evaluation_windows(tokens, args.window_length, args.windows, args.text, bos)
    print(f"| model | bits/weight (whole) | perplexity ({args.windows} x {args.window_length}) | tokens/s |")
    print("| --- | --- | --- | --- |")
    bits = f"{manifest['statistics'].get('total_bits_per_weight', 0):.3f}"
    rows = ((args.original_model, original.model, "16 (fp16 reference)"), (str(args.file), compressed, bits))
    for name, model, bits in rows:
        ppl = perplexity(model, windows, progress=not args.no_progress).perplexity
        speed = forward_throughput(model, windows[:2], batch_size=1, batches=2)["tokens_per_second"]
        print(f"| {name} | {bits} | {ppl:.2f} | {speed:.0f} |", flush=True)
    return 0


def run(args: argparse.Namespace) -> int:
    commands = {"validate": validate_command, "stats": stats_command, "info": info_command,
                "benchmark": benchmark_command}  # fmt: skip
    return commands.get(args.command, compress_command)(args)
