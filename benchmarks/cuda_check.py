"""The GPU check, in one script for a machine with CUDA (under 5 minutes on one data-centre GPU):

1. the tests parametrised over devices, CUDA cases only (``pytest -k cuda``: Wanda, SparseGPT, N:M,
   structured neurons, regrowth, heal, statistics on the weights' device, CUDA masks = CPU masks);
2. Wanda 50 % of a random LLaMA-architecture model (``--size``: 1b is TinyLlama-1.1B's shape, 3b
   OpenLLaMA-3B's), built in memory (no download), on CUDA and on the CPU, seconds each.

    python benchmarks/cuda_check.py --size 1b --out results/cuda_check.json
    python benchmarks/cuda_check.py --size 3b --skip-tests --cpu-layers 4   # CPU time from 4 layers

CPU figures for big models take long: ``--cpu-layers K`` times the CPU on the first K decoder layers
only and scales to the whole depth (the layer driver visits layers one after the other, each the same
work), which the output says.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import torch
from transformers import LlamaConfig, LlamaForCausalLM

ROOT = Path(__file__).resolve().parents[1]
SHAPES = {  # hidden, intermediate, layers, heads, kv heads
    "0.1b": (768, 2048, 12, 12, 4),
    "1b": (2048, 5632, 22, 32, 4),
    "3b": (3200, 8640, 26, 32, 32),
}


def random_llama(size: str, layers: int | None = None) -> LlamaForCausalLM:
    hidden, inter, depth, heads, kv = SHAPES[size]
    config = LlamaConfig(
        vocab_size=32000,
        hidden_size=hidden,
        intermediate_size=inter,
        num_hidden_layers=layers or depth,
        num_attention_heads=heads,
        num_key_value_heads=kv,
        max_position_embeddings=2048,
    )
    torch.manual_seed(0)
    return LlamaForCausalLM(config).eval()


def time_wanda(model, windows: torch.Tensor, device: str) -> float:
    from bird_bone.prune.layerwise import prune_layers

    model.to(device)
    if device == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    masks = prune_layers(model, "wanda", 0.5, windows, batch_size=4)
    if device == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    assert all(m.device.type == device for m in masks.values()), "masks left the model's device"
    return seconds


def run_tests() -> dict:
    command = [sys.executable, "-m", "pytest", "-q", "-k", "cuda", "-m", "not slow", "-p", "no:cacheprovider"]
    command += [
        "tests/prune/test_prune_devices.py",
        "tests/heal/test_heal_devices.py",
        "tests/calibration/test_statistics_devices.py",
    ]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    print(done.stdout[-4000:], done.stderr[-2000:], sep="\n", flush=True)
    return {"returncode": done.returncode, "summary": (done.stdout.strip().splitlines() or [""])[-1]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", choices=sorted(SHAPES), default="1b")
    parser.add_argument("--windows", type=int, default=8, help="calibration windows of 512 random tokens")
    parser.add_argument("--cpu-layers", type=int, default=0, help="time the CPU on this many layers (0: all)")
    parser.add_argument("--skip-tests", action="store_true")
    parser.add_argument("--skip-cpu", action="store_true")
    parser.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", "results")) / "cuda_check.json")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("cuda_check: no CUDA device visible", file=sys.stderr)
        return 1
    report = {"device": torch.cuda.get_device_name(0), "size": args.size, "windows": args.windows}
    if not args.skip_tests:
        report["tests"] = run_tests()
    windows = torch.randint(0, 32000, (args.windows, 512), generator=torch.Generator().manual_seed(0))
    model = random_llama(args.size)
    report["parameters"] = sum(p.numel() for p in model.parameters())
    report["cuda_seconds"] = time_wanda(model, windows, "cuda")
    del model
    torch.cuda.empty_cache()
    if not args.skip_cpu:
        depth = SHAPES[args.size][2]
        layers = min(args.cpu_layers or depth, depth)
        seconds = time_wanda(random_llama(args.size, layers), windows, "cpu")
        report.update(cpu_threads=torch.get_num_threads(), cpu_layers=layers, cpu_seconds=seconds * depth / layers)
    print(json.dumps(report, indent=2))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    ok = report.get("tests", {}).get("returncode", 0) == 0
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
