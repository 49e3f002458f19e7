"""Heal a saved pruned checkpoint from the command line, in one process or under ``accelerate launch``.

    python -m bird_bone.heal.launch --checkpoint CKPT --windows WINDOWS.safetensors --out HEALED
    accelerate launch --multi_gpu --num_processes 2 -m bird_bone.heal.launch ...  # 2 processes: CPUs (gloo)
                                                                # when there is no GPU, else 2 GPUs (DDP)
    accelerate launch --use_fsdp --num_processes 4 -m bird_bone.heal.launch ...   # 4 GPUs, sharded (FSDP)

(accelerate 1.15's ``--cpu --num_processes 2`` starts ONE process unless mpirun is given a hostfile:
``--cpu`` uses the simple launcher; ``--multi_gpu`` goes through torchrun, and with no GPU visible the
processes join over gloo.)

``CKPT`` is a checkpoint written by :func:`bird_bone.io.checkpoint.save_checkpoint` (its
``masks.safetensors`` are the pruned positions, kept exactly zero); ``WINDOWS`` holds the token ids
[N, L] under the key ``windows`` (the catalog's ``prune.calibration_windows`` file, or teacher
samples). ``--teacher`` adds distillation to a dense checkpoint. ``--set KEY=VALUE`` sets any field
of the ``heal`` parameters (:class:`bird_bone.heal.config.HealParams`, values read as YAML). Every
process trains on its share of each global batch (:mod:`.distributed`); only the main process writes
``HEALED``, a checkpoint whose ``bird_bone.json`` holds the heal record (loss per step) under ``heal``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import yaml

from bird_bone.cli.errors import USER_ERRORS, report_error
from bird_bone.errors import BirdBoneError

PROG = "bird_bone.heal.launch"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--checkpoint", type=Path, required=True, help="pruned checkpoint directory")
    parser.add_argument("--windows", type=Path, required=True, help="safetensors file of token ids [N, L]")
    parser.add_argument("--out", type=Path, required=True, help="directory of the healed checkpoint")
    parser.add_argument("--teacher", type=Path, help="dense checkpoint to distil from (with heal.kd_weight > 0)")
    parser.add_argument("--steps", type=int, help="heal.steps (default: the heal parameters' own)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="a heal parameter")
    parser.add_argument("-v", "--verbose", action="store_true", help="show progress; full traceback on error")
    return parser


def heal_params(steps: int | None, settings: list[str]):
    """The heal parameters from ``--steps`` and ``--set KEY=VALUE`` (validated, errors name the field)."""
    from bird_bone.heal.config import HealParams

    values = {}
    for setting in settings:
        key, sep, value = setting.partition("=")
        if not sep:
            raise BirdBoneError(f"--set {setting!r}: expected KEY=VALUE")
        values[key.strip()] = yaml.safe_load(value)
    if steps is not None:
        values["steps"] = steps
    return HealParams.model_validate(values)


def heal_checkpoint(args: argparse.Namespace) -> dict:
    """Load, heal (every process), save (main process only); returns the heal record."""
    import torch
    from accelerate import PartialState

    from bird_bone.data.windows import bos_token
    from bird_bone.io.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
    from bird_bone.io.tensors import load_tensors
    from bird_bone.loop.steps import heal_step

    state = PartialState(cpu=not torch.cuda.is_available())  # as micro_heal's Accelerator: gloo on CPUs
    params = heal_params(args.steps, args.set)
    checkpoint = load_checkpoint(args.checkpoint)
    windows = load_tensors(args.windows).get("windows")
    if windows is None:
        raise BirdBoneError(f"{args.windows} has no tensor named 'windows'")
    teacher = load_checkpoint(args.teacher).model if args.teacher else None
    masks = checkpoint.masks or {}
    result = heal_step(
        checkpoint.model,
        windows.long(),
        masks,
        params.steps if params.enabled else 0,
        teacher=teacher,
        seed=params.seed,
        bos=bos_token(checkpoint.tokenizer) if checkpoint.tokenizer is not None else None,
        progress=args.verbose,
        **params.options(),
    )
    record = result.to_dict()
    if state.is_main_process:
        metadata = {**checkpoint.metadata, "heal": record, "processes": state.num_processes}
        save_checkpoint(Checkpoint(checkpoint.model, checkpoint.tokenizer, metadata, checkpoint.masks), args.out)
    state.wait_for_everyone()
    return record


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        record = heal_checkpoint(args)
    except (BirdBoneError, *USER_ERRORS) as exc:
        return report_error(PROG, exc, args.verbose)
    if args.verbose and record["loss"]:
        print(f"{PROG}: {record['steps']} steps, loss {record['loss'][0]:.4f} -> {record['loss'][-1]:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
