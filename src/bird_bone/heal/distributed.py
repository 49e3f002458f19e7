"""What healing needs to run unchanged under ``accelerate launch`` (DDP or FSDP, one GPU or several,
or ``--cpu`` processes over gloo): each process's share of a global batch, the logged losses
averaged over the processes, and the trained adapters seen whole for the masked merge.

The global batch is cut from the same shuffled stream in every process (same seed), and process
``i`` of ``n`` keeps rows ``i, i + n, ...``. Every row has the same length and each loss is a mean
over positions, so the mean of the ``n`` shard means that DDP's gradient all-reduce computes is the
mean over the whole batch: the gradient, and so the curve, are the single-process run's (with LoRA
dropout 0, the default; dropout draws its own noise in each process). Accelerate's
prepared DataLoader would shard too, but with its own sampler and so a different order of windows
than the single-process run; the explicit shard keeps the two runs comparable step by step.

Under FSDP the adapters are sharded: ``full_adapters`` gathers them (FSDP1's
``summon_full_params``; FSDP2's DTensors are made whole in :func:`full_tensor`) so that every
process merges the same full delta into its own copy of the model. FSDP needs one dtype in a
flattened group, so it shards a ``base: full`` student (bitsandbytes' 4-bit weights cannot be flattened
with float adapters); the dense teacher is not wrapped, each process holds it whole.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from accelerate import Accelerator
from accelerate.utils import DistributedType
from torch import nn

from bird_bone.errors import BirdBoneError

# Segments that wrappers (FSDP1 auto-wrap, activation checkpointing, DDP, peft) add to module names.
_WRAPPER_SEGMENTS = ("_fsdp_wrapped_module.", "_checkpoint_wrapped_module.")
_PREFIXES = ("module.", "base_model.model.")


class DistributedHealError(BirdBoneError):
    """The heal cannot be split over the launched processes as asked."""


def shard(batch: torch.Tensor, accelerator: Accelerator) -> torch.Tensor:
    """This process's rows of the global ``batch`` [B, L]: rows ``process_index::num_processes``."""
    count = accelerator.num_processes
    if batch.shape[0] % count:
        raise DistributedHealError(
            f"heal.batch_size {batch.shape[0]} is not a multiple of the {count} launched processes"
        )
    return batch[accelerator.process_index :: count]


def mean_over_processes(values: list[torch.Tensor], accelerator: Accelerator) -> list[float]:
    """The mean over processes of each scalar in ``values`` (unchanged in a single process)."""
    stacked = torch.stack([v.detach().float() for v in values])
    if accelerator.num_processes > 1:
        stacked = accelerator.reduce(stacked, reduction="mean")
    return stacked.tolist()


def module_name(name: str) -> str:
    """The name a module of a wrapped (DDP, FSDP, peft) model has in the bare model."""
    for segment in _WRAPPER_SEGMENTS:
        name = name.replace(segment, "")
    for prefix in _PREFIXES:
        name = name.removeprefix(prefix)
    return name


def full_tensor(tensor: torch.Tensor) -> torch.Tensor:
    """``tensor`` whole: an FSDP2 DTensor shard is gathered from every process (collective)."""
    return tensor.full_tensor() if hasattr(tensor, "full_tensor") else tensor


@contextlib.contextmanager
def full_adapters(accelerator: Accelerator, model: nn.Module) -> Iterator[nn.Module]:
    """The bare (unwrapped) trained model, with FSDP1's sharded parameters gathered whole inside."""
    if accelerator.distributed_type == DistributedType.FSDP and not _is_fsdp2(accelerator):
        from torch.distributed.fsdp import FullyShardedDataParallel as FSDP

        with FSDP.summon_full_params(model, writeback=False):
            yield accelerator.unwrap_model(model)
        return
    yield accelerator.unwrap_model(model)


def _is_fsdp2(accelerator: Accelerator) -> bool:
    plugin = accelerator.state.fsdp_plugin
    return plugin is not None and getattr(plugin, "fsdp_version", 1) == 2
