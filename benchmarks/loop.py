"""Benchmark: the growth-prune-heal loop on the embedded model (SmolLM2-135M, Q4_1 dequantized).

    .venv/bin/python benchmarks/loop.py heal --steps 200 --curve-every 25     # micro-heal at Wanda 50 %
    .venv/bin/python benchmarks/loop.py waves --target 0.7 --waves 4          # the loop with stop-loss
    .venv/bin/python benchmarks/loop.py lowrank --modules o_proj --energies 0.9 0.95   # low-rank stage

``heal``: Wanda 50 % one-shot, then one QLoRA micro-heal of ``--steps`` steps; prints perplexity
against heal steps (the adapter merged through the masks on a copy every ``--curve-every`` steps)
and checks that sparsity is unchanged. ``waves``: the loop's wave node
(``bird_bone.pipelines.loop.nodes.wave_node``) with the project's default heal/regrow/stop-loss
parameters; prints per wave and per stage wall time, perplexity, sparsity, status, and the
process's peak memory.

Protocol (issues 3 and 4): evaluation on the first ``--eval-windows`` (default 32) non-overlapping
windows of 512 tokens of WikiText-2 raw test; calibration / healing text: 32 windows of 512 tokens
drawn with random.seed(0) from the tokenized WikiText-2 validation text; 2 threads.
"""

from __future__ import annotations

import argparse
import copy
import json
import resource
import sys
import time
from pathlib import Path

import torch

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def setup(eval_windows: int):
    from bird_bone.data.windows import calibration_windows, evaluation_windows, tokenize_text
    from bird_bone.models.loading import load_model

    if not (SHARED / "wikitext2-raw-test.txt").is_file():
        sys.exit(f"missing {SHARED}/wikitext2-raw-test.txt: this benchmark needs ../shared/data")
    loaded = load_model("smollm2-135m")
    tok = loaded.tokenizer
    calibration = calibration_windows(
        tokenize_text(tok, (SHARED / "wikitext2-valid-tokenized.txt").read_text()), 512, 32, seed=0
    )
    evaluation = evaluation_windows(
        tokenize_text(tok, (SHARED / "wikitext2-raw-test.txt").read_text()), 512, eval_windows
    )
    return loaded, calibration, evaluation


def bench_heal(args) -> None:
    from bird_bone.eval.perplexity import perplexity
    from bird_bone.heal.qlora import merge_lora_masked, micro_heal
    from bird_bone.prune.layerwise import mask_sparsity, prune_layers

    loaded, calibration, evaluation = setup(args.eval_windows)
    model = loaded.model
    teacher = copy.deepcopy(model) if args.kd_weight > 0 else None
    dense = perplexity(model, evaluation, 4, progress=False).perplexity
    t = time.perf_counter()
    masks = prune_layers(model, "wanda", 0.5, calibration, batch_size=8)
    prune_seconds = time.perf_counter() - t
    oneshot = perplexity(model, evaluation, 4, progress=False).perplexity
    sparsity = mask_sparsity(masks)
    curve = [(0, oneshot)]

    def on_step(step, student):
        if step % args.curve_every == 0 and step < args.steps:
            probe = copy.deepcopy(model)
            merge_lora_masked(probe, student, masks)
            curve.append((step, perplexity(probe, evaluation, 4, progress=False).perplexity))
            print(f"step {step}: perplexity {curve[-1][1]:.3f}", flush=True)

    result = micro_heal(
        model,
        calibration,
        masks,
        args.steps,
        rank=args.rank,
        learning_rate=args.lr,
        base=args.base,
        batch_size=args.batch_size,
        window_length=args.window_length,
        teacher=teacher,
        kd_weight=args.kd_weight,
        callback=on_step,
    )
    healed = perplexity(model, evaluation, 4, progress=False).perplexity
    curve.append((args.steps, healed))
    zeros_kept = all(bool((model.get_submodule(n).weight[m] == 0).all()) for n, m in masks.items())
    print(
        f"\nWanda 50 % + micro-heal ({args.base}, rank {args.rank}, lr {args.lr}, batch {args.batch_size} x "
        f"{args.window_length} tokens, KD weight {args.kd_weight}); {args.eval_windows} x 512 evaluation windows\n"
    )
    print("| heal steps | perplexity | change against one-shot |")
    print("| --- | --- | --- |")
    for step, ppl in curve:
        print(f"| {step} | {ppl:.3f} | {ppl / oneshot - 1:+.2%} |")
    print(
        f"\ndense {dense:.3f}; one-shot {oneshot:.3f}; healed {healed:.3f}; sparsity {sparsity:.4f} before and "
        f"{mask_sparsity(masks):.4f} after, pruned weights all zero: {zeros_kept}"
    )
    print(
        f"prune {prune_seconds:.1f} s; heal {result.seconds:.1f} s ({result.seconds / max(args.steps, 1):.2f} s/step "
        f"incl. curve evaluations); peak RSS {peak_mib():.0f} MiB"
    )
    print(json.dumps({"curve": curve, "loss": result.loss}))


def bench_waves(args) -> None:
    from bird_bone.config import DataParams, EvalParams, HealParams, PruneParams, RegrowParams, StopLossParams
    from bird_bone.eval.perplexity import perplexity
    from bird_bone.heal.stoploss import LoopState
    from bird_bone.io.checkpoint import Checkpoint
    from bird_bone.pipelines.loop.nodes import wave_node

    loaded, calibration, evaluation = setup(args.eval_windows)
    dense = perplexity(loaded.model, evaluation, 4, progress=False).perplexity
    prune = PruneParams(method=args.method, target_sparsity=args.target, waves=args.waves)
    heal = HealParams(steps=args.steps, data="calibration", lm_weight=1.0, kd_weight=0.0)  # docs: LM heal
    regrow, stop = RegrowParams(), StopLossParams(max_ppl_increase=args.max_increase, patience=args.patience)
    data = DataParams(calibration={"source": "wikitext2-valid", "fallback": None}, evaluation={"source": "-"})
    ev = EvalParams(windows=args.eval_windows)
    base = Checkpoint(loaded.model, loaded.tokenizer, {})
    previous = accepted = base
    state = {**LoopState(0, 0, dense, dense).to_dict(), "fingerprint": "benchmark"}
    rows = []
    for _ in range(args.waves):
        args_ = (previous, accepted, state, base, None, calibration, evaluation, prune, heal, regrow, stop, data, ev)
        previous, accepted, record, state = wave_node(*args_)
        rows.append(record)
        print(json.dumps({k: v for k, v in record.items() if k != "heal"}), flush=True)
    print(
        f"\n{args.method} to {args.target} over {args.waves} waves, heal {args.steps} steps/wave (QLoRA NF4, rank 8), "
        f"stop-loss {args.max_increase:.0%} x {args.patience}; dense perplexity {dense:.3f} "
        f"({args.eval_windows} x 512 windows)\n"
    )
    print("| wave | sparsity | perplexity | delta | regrown | status | prune s | regrow s | heal s | wave s |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        if r["status"] == "skipped":
            print(f"| {r['wave']} | - | - | - | - | skipped | - | - | - | - |")
            continue
        print(
            f"| {r['wave']} | {r['sparsity']:.4f} | {r['perplexity']:.3f} | {r['delta']:+.2%} | "
            f"{r['regrown_fraction']:.2%} | {r['status']} | {r['prune_seconds']:.0f} | "
            f"{r.get('regrow_seconds', 0):.0f} | "
            f"{r['heal']['seconds']:.0f} | {r['seconds']:.0f} |"
        )
    print(f"\npeak RSS {peak_mib():.0f} MiB")


def bench_lowrank(args) -> None:
    from bird_bone.calibration.activations import log_activations
    from bird_bone.eval.perplexity import perplexity
    from bird_bone.eval.speed import parameter_count
    from bird_bone.lowrank.svd import factorize_linears
    from bird_bone.models.adapters import prunable_linears

    loaded, calibration, evaluation = setup(args.eval_windows)
    model = loaded.model
    stats = log_activations(model, calibration[:8], 4, False, 2, 16, 0)
    before = parameter_count(model)["parameters"]
    dense = perplexity(model, evaluation, 4, progress=False).perplexity
    print(f"dense: {before:,} parameters, perplexity {dense:.3f} ({args.eval_windows} x 512 windows)\n")
    print("| projections | energy | activation-aware | replaced | parameters | change | perplexity | change |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for energy in args.energies:
        for aware in (False, True):
            m = copy.deepcopy(model)
            names = [n for n in prunable_linears(m) if n.rsplit(".", 1)[-1] in args.modules]
            scales = {n: stats[f"{n}.input_sq_norms"].sqrt() for n in names} if aware else None
            report = factorize_linears(m, names, energy, scales)
            after = parameter_count(m)["parameters"]
            ppl = perplexity(m, evaluation, 4, progress=False).perplexity
            replaced = sum(r["replaced"] for r in report.values())
            print(f"| {','.join(args.modules)} | {energy} | {aware} | {replaced}/{len(names)} | {after:,} | "
                  f"{after / before - 1:+.2%} | {ppl:.3f} | {ppl / dense - 1:+.2%} |", flush=True)  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="what", required=True)
    heal = sub.add_parser("heal")
    heal.add_argument("--steps", type=int, default=200)
    heal.add_argument("--curve-every", type=int, default=25)
    heal.add_argument("--rank", type=int, default=8)
    heal.add_argument("--lr", type=float, default=3e-4)
    heal.add_argument("--base", choices=["nf4", "full"], default="nf4")
    heal.add_argument("--batch-size", type=int, default=2)
    heal.add_argument("--window-length", type=int, default=256)
    heal.add_argument("--kd-weight", type=float, default=0.0)
    waves = sub.add_parser("waves")
    waves.add_argument("--method", default="wanda")
    waves.add_argument("--target", type=float, default=0.7)
    waves.add_argument("--waves", type=int, default=4)
    waves.add_argument("--steps", type=int, default=60)
    waves.add_argument("--max-increase", type=float, default=0.03)
    waves.add_argument("--patience", type=int, default=2)
    lowrank = sub.add_parser("lowrank")
    lowrank.add_argument("--modules", nargs="+", default=["o_proj"])
    lowrank.add_argument("--energies", nargs="+", type=float, default=[0.9, 0.95])
    for p in (heal, waves, lowrank):
        p.add_argument("--eval-windows", type=int, default=32)
        p.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    {"heal": bench_heal, "waves": bench_waves, "lowrank": bench_lowrank}[args.what](args)


if __name__ == "__main__":
    main()
