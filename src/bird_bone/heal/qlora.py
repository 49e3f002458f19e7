"""QLoRA micro-heal of a pruned model, merged back so that pruned weights stay exactly zero.

QLoRA (Dettmers et al. 2023): the frozen base is stored in 4-bit NormalFloat (bitsandbytes, which
runs on the CPU), low-rank adapters (peft LoRA, Hu et al. 2021) are trained on top in full
precision. The loss is ``lm_weight`` times the next-token cross-entropy plus ``kd_weight`` times a
distillation term, KL(p_teacher || p_student) at temperature T (Hinton et al. 2015), to a dense
teacher's logits (the loop's default: distillation alone, on text the teacher sampled,
:mod:`.samples`). The adapter's delta ``B A * alpha / r`` is then
merged into the full-precision pruned weights through the mask: ``W <- W + (1 - M) * delta``, so a
pruned position (M = 1) keeps its exact zero. peft's own ``merge_and_unload`` would add the dense
delta everywhere (and into the 4-bit copy), which is why the merge is written here.

Training goes through Accelerate: in a single process (plain ``python``, ``kedro run``) it changes
nothing; under ``accelerate launch`` (DDP or FSDP, GPUs or ``--cpu`` processes) it places the student
on the process's device, gives each process its share of every global batch and averages the
gradients, so that the curve is the single-process run's (:mod:`.distributed`); every process then
merges the same adapters into its own copy of ``model``.
"""

from __future__ import annotations

import copy
import logging
import random
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field

import bitsandbytes as bnb
import torch
import torch.nn.functional as F
from accelerate import Accelerator
from peft import LoraConfig, get_peft_model
from torch import nn
from tqdm.auto import tqdm

from bird_bone.data.windows import with_bos
from bird_bone.heal.config import LORA_TARGETS
from bird_bone.heal.distributed import full_adapters, full_tensor, mean_over_processes, module_name, shard
from bird_bone.models.adapters import prunable_linears
from bird_bone.models.families import lora_targets

log = logging.getLogger(__name__)
NF4_BLOCK = 64  # elements per NF4 block scale (bitsandbytes' default blocksize)


@dataclass
class HealResult:
    """Loss per optimisation step (total, cross-entropy, distillation) and wall time."""

    steps: int
    loss: list[float] = field(default_factory=list)
    ce: list[float] = field(default_factory=list)
    kd: list[float] = field(default_factory=list)
    merged_modules: int = 0
    seconds: float = 0.0

    def to_dict(self) -> dict:
        return asdict(self)


def quantize_linears_nf4(model: nn.Module, names: Iterable[str]) -> list[str]:
    """Replace the named ``nn.Linear`` modules of ``model`` (in place) by bitsandbytes NF4 layers;
    returns the names left in float.

    A linear whose rows (``in_features``) are not a multiple of the NF4 block (``NF4_BLOCK``) stays
    in float: bitsandbytes numbers its blocks over the flattened matrix, but its CPU dequantization
    (0.50, AVX-512) reads ``in_features // NF4_BLOCK`` block scales per row, so such a matrix comes
    back scaled by other rows' scales. A structured wave leaves such widths (Gemma 3's MLP
    2048 -> 1824), and its NF4 heal then trained the adapters against a broken base.
    """
    kept = []
    for name in names:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name)
        old = getattr(parent, child)
        if old.in_features % NF4_BLOCK:
            kept.append(name)
            continue
        new = bnb.nn.Linear4bit(
            old.in_features,
            old.out_features,
            bias=old.bias is not None,
            compute_dtype=old.weight.dtype,
            quant_type="nf4",
        )
        new.weight = bnb.nn.Params4bit(
            old.weight.data.clone(), requires_grad=False, blocksize=NF4_BLOCK, quant_type="nf4"
        )
        if old.bias is not None:
            new.bias = nn.Parameter(old.bias.data.clone(), requires_grad=False)
        setattr(parent, child, new.to(old.weight.device))  # Params4bit quantizes on the move
    if kept:
        log.info("NF4 base: %d linears kept in float (rows not a multiple of %d)", len(kept), NF4_BLOCK)
    return kept


def distillation_loss(student: torch.Tensor, teacher: torch.Tensor, temperature: float) -> torch.Tensor:
    """T^2 * KL(softmax(t / T) || softmax(s / T)), mean over positions (Hinton et al. 2015, sec. 2)."""
    t = F.log_softmax(teacher.float() / temperature, dim=-1)
    s = F.log_softmax(student.float() / temperature, dim=-1)
    kl = F.kl_div(s.flatten(0, -2), t.flatten(0, -2), log_target=True, reduction="batchmean")
    return kl * temperature**2


def _batches(windows: torch.Tensor, window_length: int, batch_size: int, seed: int, bos: int | None = None):
    """Endless shuffled batches of ``window_length``-token pieces cut from ``windows`` [N, L], each
    starting with ``bos`` when the tokenizer adds one (see bird_bone.data.windows)."""
    pieces = with_bos(windows[:, : windows.shape[1] // window_length * window_length].reshape(-1, window_length), bos)
    if pieces.shape[0] == 0:
        raise ValueError(
            f"heal window_length {window_length} is longer than the calibration windows ({windows.shape[1]})"
        )
    order, rng = [], random.Random(seed)
    while True:
        if len(order) < batch_size:
            fresh = list(range(pieces.shape[0]))
            rng.shuffle(fresh)
            order += fresh
        yield pieces[order[:batch_size]]
        order = order[batch_size:]


def micro_heal(
    model: nn.Module,
    windows: torch.Tensor,
    masks: dict[str, torch.Tensor],
    steps: int,
    *,
    rank: int = 8,
    alpha: float = 16.0,
    dropout: float = 0.0,
    learning_rate: float = 2e-4,
    target_modules: Iterable[str] = LORA_TARGETS,
    base: str = "nf4",
    batch_size: int = 2,
    window_length: int = 256,
    teacher: nn.Module | None = None,
    kd_weight: float = 0.0,
    lm_weight: float = 1.0,
    temperature: float = 2.0,
    seed: int = 0,
    bos: int | None = None,
    progress: bool = True,
    callback=None,
) -> HealResult:
    """Train LoRA adapters on a (4-bit) copy of ``model`` for ``steps`` and merge them into ``model``.

    ``masks`` maps full module names to boolean tensors, True where the weight is pruned; those
    positions stay exactly zero after the merge. ``base``: ``nf4`` (QLoRA) or ``full`` (plain LoRA).
    ``callback(step, peft_model)`` runs after every step (e.g. to measure a healing curve with
    :func:`merge_lora_masked` on a copy of ``model``).
    """
    if base not in ("nf4", "full"):
        raise ValueError(f"heal base must be 'nf4' or 'full', got '{base}'")
    result = HealResult(steps=steps)
    if steps == 0:
        return result
    start = time.perf_counter()
    targets = tuple(lora_targets(model, target_modules))
    names = [n for n in prunable_linears(model) if n.rsplit(".", 1)[-1] in targets]
    if not names:
        raise ValueError(f"heal target_modules {list(targets)} match no linear layer of the model")
    torch.manual_seed(seed)
    student = copy.deepcopy(model)
    if base == "nf4":
        quantize_linears_nf4(student, names)
    config = LoraConfig(r=rank, lora_alpha=alpha, lora_dropout=dropout, target_modules=list(targets), bias="none")
    student = get_peft_model(student, config)
    student.train()
    trainable = [p for p in student.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=learning_rate, weight_decay=0.0)
    accelerator = Accelerator(cpu=not torch.cuda.is_available())
    student, optimizer = accelerator.prepare(student, optimizer)
    teacher = teacher.to(accelerator.device) if teacher is not None and kd_weight > 0 else None
    batches = _batches(windows, window_length, batch_size, seed, bos)  # the same global batches in every process
    weights = (lm_weight, kd_weight, temperature)
    quiet = not (progress and accelerator.is_main_process)
    for _ in tqdm(range(steps), desc="micro-heal", unit="step", disable=quiet):
        batch = shard(next(batches), accelerator).to(accelerator.device)
        logged = _step(student, teacher, optimizer, accelerator, batch, weights)
        for values, value in zip((result.loss, result.ce, result.kd), logged, strict=True):
            values.append(value)
        if callback is not None:
            callback(len(result.loss), accelerator.unwrap_model(student))
    with full_adapters(accelerator, student) as trained:
        result.merged_modules = merge_lora_masked(model, trained, masks)
    result.seconds = time.perf_counter() - start
    return result


def _step(student, teacher, optimizer, accelerator, batch, weights) -> list[float]:
    """One optimisation step on this process's ``batch``; the losses (total, CE, KD) averaged over
    the processes, which is the global batch's loss (see :mod:`.distributed`)."""
    lm_weight, kd_weight, temperature = weights
    logits = student(input_ids=batch, use_cache=False).logits[:, :-1]
    ce = F.cross_entropy(logits.flatten(0, 1).float(), batch[:, 1:].flatten())
    kd = torch.zeros((), device=ce.device)
    if teacher is not None:
        with torch.no_grad():
            teacher_logits = teacher(input_ids=batch, use_cache=False).logits[:, :-1]
        kd = distillation_loss(logits, teacher_logits, temperature)
    loss = lm_weight * ce + kd_weight * kd
    optimizer.zero_grad(set_to_none=True)
    accelerator.backward(loss)
    optimizer.step()
    return mean_over_processes([loss, ce, kd], accelerator)


@torch.no_grad()
def merge_lora_masked(model: nn.Module, peft_model: nn.Module, masks: dict[str, torch.Tensor]) -> int:
    """Add each LoRA delta of ``peft_model`` to the matching weight of ``model``, zero where masked."""
    merged = 0
    for name, module in peft_model.named_modules():
        if not (hasattr(module, "lora_A") and hasattr(module, "get_delta_weight")):
            continue
        base_name = module_name(name)
        target = model.get_submodule(base_name)
        for adapter in module.active_adapters:
            delta = full_tensor(module.get_delta_weight(adapter)).to(target.weight.device, target.weight.dtype)
            mask = masks.get(base_name)
            if mask is not None:
                delta = delta.masked_fill(mask.to(delta.device), 0.0)
            target.weight.add_(delta)
            merged += 1
    return merged
