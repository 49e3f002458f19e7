"""NOVAQ stage 2, last step: the codebook update of GPTVQ (van Baalen et al. 2024, sec. 3.3).

Once every index is fixed, the decoded matrix W_hat = mu + s * (C1[i1] + C2[i2]) is affine in the
codebooks C1, C2 and the row means mu, so the layer's output error

    E(C1, C2, mu) = tr((W - W_hat) H (W - W_hat)^T) = ||(W - W_hat) L||_F^2,   H = L L^T,

is a convex quadratic in them. It is minimised here with L-BFGS (torch.optim.LBFGS, strong-Wolfe line
search): a handful of iterations, each one product with the Cholesky factor of H, and no extra bits.
Written by hand because it is a dozen lines over ``NovaqTensor.decode`` and torch's optimiser.
"""

from __future__ import annotations

import torch

from bird_bone.hessian import dampened_hessian
from bird_bone.quant.tensor import NovaqTensor


def output_error(weight: torch.Tensor, q: NovaqTensor, factor: torch.Tensor) -> float:
    """Relative layer-output error sqrt(tr(E H E^T) / tr(W H W^T)), ``factor`` L with H = L L^T."""
    with torch.no_grad():
        w = weight.float() @ factor
        return float((w - q.decode() @ factor).norm() / w.norm().clamp_min(1e-30))


def hessian_factor(hessian: torch.Tensor, percdamp: float = 0.01) -> torch.Tensor:
    """Lower Cholesky factor L of the Hessian dampened as stage 2's assignment dampens it."""
    return torch.linalg.cholesky(dampened_hessian(hessian, percdamp)[0])


def update_codebooks(
    q: NovaqTensor,
    weight: torch.Tensor,
    hessian: torch.Tensor,
    iterations: int = 10,
    percdamp: float = 0.01,
    tune_means: bool = True,
) -> tuple[float, float]:
    """Re-fit ``q``'s codebooks (and row means) in place to the original ``weight`` under the metric of
    ``hessian``, indices fixed; returns the relative output error (before, after). Parameters are
    rounded to float16 at the end, as stored; the result is kept only if it is no worse."""
    L = hessian_factor(hessian, percdamp)
    target = weight.detach().float() @ L
    scale = float(target.square().sum().clamp_min(1e-30))
    params = [q.primary, q.residual] + ([q.mean] if tune_means else [])
    saved = [p.detach().clone() for p in params]
    before = output_error(weight, q, L)
    grads = [p.requires_grad for p in params]
    for p in params:
        p.requires_grad_(True)
    optimizer = torch.optim.LBFGS(params, lr=1.0, max_iter=iterations, history_size=10, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimizer.zero_grad(set_to_none=True)
        loss = (target - q.decode() @ L).square().sum() / scale
        loss.backward()
        return loss

    with torch.enable_grad():
        optimizer.step(closure)
    for p, g in zip(params, grads):
        p.requires_grad_(g)
        p.grad = None
    q.round_to_storage()
    after = output_error(weight, q, L)
    if not after <= before:  # a failed line search (or NaN) never makes the layer worse
        with torch.no_grad():
            for p, s in zip(params, saved):
                p.copy_(s)
        after = before
    return before, after
