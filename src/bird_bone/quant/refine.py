"""NOVAQ stage 3, teacher-guided refinement: with every index fixed, tune the codebooks (and
optionally the means and outlier scales) so the quantized student matches a teacher on text.

Loss per batch (NOVAQ eq. 3): T^2 * KL(p_teacher^T || p_student^T) + lambda * sum_layers
(1 - cos(h_teacher, h_student)), token-averaged. The bit budget is unchanged: only float16
codebook entries move, and they are rounded to float16 again at the end. The student runs through
``torch.func.functional_call`` with decoded weights, so the model itself keeps the teacher's weights.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call
from tqdm.auto import tqdm

from bird_bone.quant.config import RefineConfig
from bird_bone.quant.tensor import NovaqTensor

log = logging.getLogger(__name__)


@dataclass
class RefineResult:
    losses: list[float] = field(default_factory=list)  # total loss per iteration
    kl: list[float] = field(default_factory=list)
    cosine: list[float] = field(default_factory=list)
    seconds: float = 0.0
    iterations: int = 0

    def to_dict(self) -> dict:
        return asdict(self)


def distillation_loss(t_out, s_out, config: RefineConfig) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(total, kl, cosine) for one batch of teacher and student outputs (with hidden states)."""
    temp = config.temperature
    t_logp = F.log_softmax(t_out.logits.float() / temp, dim=-1)
    s_logp = F.log_softmax(s_out.logits.float() / temp, dim=-1)
    kl = F.kl_div(s_logp.flatten(0, 1), t_logp.flatten(0, 1), log_target=True, reduction="batchmean") * temp**2
    cosine = kl.new_zeros(())
    if config.cosine_weight and t_out.hidden_states and len(t_out.hidden_states) == len(s_out.hidden_states):
        for h_t, h_s in zip(t_out.hidden_states[1:], s_out.hidden_states[1:]):
            if h_t.shape == h_s.shape:
                cosine = cosine + (1 - F.cosine_similarity(h_t.float(), h_s.float(), dim=-1)).mean()
    return config.kl_weight * kl + config.cosine_weight * cosine, kl, cosine


def trainable(quantized: dict[str, NovaqTensor], tune_scales: bool) -> list[nn.Parameter]:
    params = []
    for q in quantized.values():
        params += [q.primary, q.residual]
        q.primary.requires_grad_(True)
        q.residual.requires_grad_(True)
        q.mean.requires_grad_(tune_scales)
        q.outlier_scale.requires_grad_(tune_scales)
        if tune_scales:
            params += [q.mean, q.outlier_scale]
    return params


def refine(
    model: nn.Module,
    quantized: dict[str, NovaqTensor],
    windows: torch.Tensor,
    config: RefineConfig | None = None,
    teacher: nn.Module | None = None,
    progress: bool = True,
) -> RefineResult:
    """Tune ``quantized`` in place against ``teacher`` (default: ``model`` with its own weights)."""
    config = config or RefineConfig()
    if windows.ndim != 2 or windows.shape[0] < 1:
        raise ValueError(f"refinement needs calibration windows [N, L], got shape {tuple(windows.shape)}")
    teacher = teacher if teacher is not None else model
    params = trainable(quantized, config.tune_scales)
    optimizer = torch.optim.Adam(params, lr=config.learning_rate)
    gen = torch.Generator().manual_seed(config.seed)
    result, start = RefineResult(), time.perf_counter()
    model.eval()
    frozen = [p for p in model.parameters() if p.requires_grad]  # only the codes' parameters get gradients
    for p in frozen:
        p.requires_grad_(False)
    try:
        for _ in tqdm(range(config.max_iterations), desc="novaq refine", unit="step", disable=not progress):
            batch = windows[torch.randint(0, windows.shape[0], (config.batch_size,), generator=gen)]
            batch = batch.to(next(teacher.parameters()).device)
            with torch.no_grad():
                t_out = teacher(input_ids=batch, output_hidden_states=True, use_cache=False)
            weights = {name: q.decode() for name, q in quantized.items()}
            s_out = functional_call(
                model, weights, args=(), kwargs={"input_ids": batch, "output_hidden_states": True, "use_cache": False}
            )
            loss, kl, cos = distillation_loss(t_out, s_out, config)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            result.losses.append(float(loss.detach()))
            result.kl.append(float(kl.detach()))
            result.cosine.append(float(cos.detach()))
    finally:
        for p in frozen:
            p.requires_grad_(True)
    for q in quantized.values():
        q.round_to_storage()
        for p in q.parameters():
            p.requires_grad_(False)
    result.seconds, result.iterations = time.perf_counter() - start, len(result.losses)
    log.info(
        "NOVAQ refinement: %d steps in %.1f s, loss %.4f -> %.4f",
        result.iterations,
        result.seconds,
        result.losses[0] if result.losses else float("nan"),
        result.losses[-1] if result.losses else float("nan"),
    )
    return result
