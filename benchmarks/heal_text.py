"""Benchmark: does healing generalise? One structured wave of the default recipe, then the same
40-step QLoRA heal with different texts and losses, each scored on both texts.

    .venv/bin/python benchmarks/heal_text.py [--run-dir .] [--steps 40] [--variants lm-calibration,kd-samples-t1]

Reads what a default ``kedro run`` left in ``--run-dir``: the dense baseline (``models/baseline``), its
evaluation windows (WikiText-2 raw test, ``eval.windows`` x 512), the second domain's (TinyStories
slice), the calibration windows (WikiText-2 validation, 32 x 512, seed 0) and the teacher's samples
(``heal.text``, 32 x 256). The wave: ``prune.method: structured`` at its defaults (10 % of the MLP neurons,
widths rounded to 32). The embedded model is SmolLM2-135M-Instruct (Q4_1 weights dequantized); every
figure is perplexity in transformers.
"""

from __future__ import annotations

import argparse
import copy
import time
from pathlib import Path

from bird_bone.config import HealParams, PruneParams
from bird_bone.data.windows import bos_token
from bird_bone.io.checkpoint import load_checkpoint
from bird_bone.io.tensors import load_tensors
from bird_bone.loop.steps import heal_step, text_perplexities
from bird_bone.prune.step import prune_step

# name: (heal text, lm_weight, kd_weight, temperature)
VARIANTS = {
    "lm-calibration": ("calibration", 1.0, 0.0, 2.0),
    "kd-samples-t2": ("samples", 0.0, 1.0, 2.0),
    "kd-samples-t1": ("samples", 0.0, 1.0, 1.0),
    "kd-calibration-t1": ("calibration", 0.0, 1.0, 1.0),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run-dir", type=Path, default=Path("."))
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--variants", default="lm-calibration,kd-samples-t1,kd-calibration-t1")
    parser.add_argument("--base", choices=["nf4", "full"], default="nf4", help="QLoRA (nf4) or LoRA on the float base")
    args = parser.parse_args()
    windows = {
        name: load_tensors(args.run_dir / f"data/02_intermediate/{name}.safetensors")["windows"]
        for name in ("evaluation_windows", "second_evaluation_windows", "calibration_windows", "heal_text")
    }
    texts = {"samples": windows["heal_text"], "calibration": windows["calibration_windows"]}
    scored = {"WikiText-2 test": windows["evaluation_windows"], "TinyStories": windows["second_evaluation_windows"]}
    dense = load_checkpoint(args.run_dir / "models/baseline")
    prune, heal = PruneParams(), HealParams(base=args.base)
    pruned = copy.deepcopy(dense.model)
    prune_step(pruned, prune.method, prune.amount(1), windows["calibration_windows"], batch_size=4, **prune.options())
    print("| heal | text | loss | WikiText-2 test | TinyStories | seconds |")
    print("| --- | --- | --- | --- | --- | --- |")
    for label, model in (("dense", dense.model), ("none (after pruning)", pruned)):
        ppl = text_perplexities(model, scored, 4)
        print(f"| {label} | - | - | {ppl['WikiText-2 test']:.3f} | {ppl['TinyStories']:.3f} | - |")
    options, bos = heal.options(), bos_token(dense.tokenizer)
    for name in args.variants.split(","):
        text, lm, kd, temperature = VARIANTS[name]
        model, start = copy.deepcopy(pruned), time.perf_counter()
        options.update(lm_weight=lm, kd_weight=kd, temperature=temperature)
        seed = heal.seed + 1  # the loop's wave 1
        teacher = dense.model
        heal_step(model, texts[text], {}, args.steps, teacher=teacher, seed=seed, bos=bos, progress=False, **options)
        ppl, seconds = text_perplexities(model, scored, 4), time.perf_counter() - start
        loss = f"LM {lm:g} + KD {kd:g} (T={temperature:g}), {args.base} base"
        print(f"| {name} | {text} | {loss} | {ppl['WikiText-2 test']:.3f} | {ppl['TinyStories']:.3f} | {seconds:.0f} |")


if __name__ == "__main__":
    main()
