"""NOVAQ stage 2 building blocks: seeded, vectorised k-means over batches of sub-vectors, residual
(additive) two-stage codebooks, and packing of b-bit indices into bytes.

Hand-written rather than taken from scikit-learn/faiss: it must run on torch tensors in batches of
independent codebooks (one per row group) at once, be bit-for-bit reproducible from a seed, and
avoid extra dependencies. Distances use ||x||^2 - 2 x.c + ||c||^2 through one batched matmul.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

_CHUNK = 1 << 16  # vectors per distance block: bounds memory at chunk * K floats per group


def assign(x: torch.Tensor, centroids: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
    """Index of the nearest centroid: x [G, N, d], centroids [G, K, d] -> [G, N] int64.

    With ``weights`` [G, N, d] (> 0) the distance is sum_j w_j (x_j - c_j)^2 (a diagonal metric)."""
    out = torch.empty(x.shape[:2], dtype=torch.long, device=x.device)
    c_t = centroids.transpose(1, 2)
    if weights is None:
        c_sq = (centroids * centroids).sum(-1)  # [G, K]
    for start in range(0, x.shape[1], _CHUNK):
        block = x[:, start : start + _CHUNK]
        if weights is None:
            dist = torch.baddbmm(c_sq[:, None, :], block, c_t, alpha=-2.0)
        else:  # sum w c^2 - 2 sum w x c (sum w x^2 is constant per vector)
            w = weights[:, start : start + _CHUNK]
            dist = torch.baddbmm(torch.bmm(w, c_t * c_t), w * block, c_t, alpha=-2.0)
        out[:, start : start + _CHUNK] = dist.argmin(-1)
    return out


def kmeans(
    x: torch.Tensor,
    k: int,
    iterations: int = 20,
    seed: int = 0,
    max_samples: int = 0,
    weights: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Lloyd's k-means on G independent sets: x [G, N, d] -> (centroids [G, k, d], codes [G, N]).

    Initialised by k-means++ (seeded, Arthur & Vassilvitskii 2007); an empty cluster is re-seeded
    with the point currently worst served, so no codeword is wasted. With ``max_samples`` > 0 the
    centroids are fitted on that many random vectors per set, then every vector is assigned.
    ``weights`` [G, N, d] (> 0): weighted k-means under the metric sum_j w_j (x_j - c_j)^2, e.g.
    GPTVQ's Hessian-diagonal weights (sec. 3.2).
    """
    full = x.detach().float()
    w = None if weights is None else weights.detach().float().expand_as(full).contiguous()
    groups, n, d = full.shape
    if k < 1 or n < 1:
        raise ValueError(f"kmeans needs k >= 1 and at least one vector, got k={k}, n={n}")
    gen = torch.Generator().manual_seed(seed)
    if 0 < max_samples < n:
        sample = torch.randperm(n, generator=gen)[:max_samples]
        centroids, _ = _lloyd(full[:, sample], k, iterations, gen, None if w is None else w[:, sample])
        return centroids, assign(full, centroids, w)
    return _lloyd(full, k, iterations, gen, w)


def kmeans_plus_plus(
    x: torch.Tensor, k: int, gen: torch.Generator, weights: torch.Tensor | None = None
) -> torch.Tensor:
    """k-means++ seeding for each set at once: each new centre drawn with probability ~ D(x)^2."""
    groups, n, d = x.shape
    rows = torch.arange(groups, device=x.device)
    w = torch.ones_like(x) if weights is None else weights
    first = torch.randint(0, n, (groups,), generator=gen).to(x.device)  # the host generator: same draws anywhere
    centroids = torch.empty(groups, k, d, device=x.device)
    centroids[:, 0] = x[rows, first]
    nearest = ((x - centroids[:, :1]).pow(2) * w).sum(-1)  # [G, N]
    for j in range(1, k):
        pick = torch.multinomial((nearest.clamp_min(0) + 1e-30).cpu(), 1, generator=gen)[:, 0].to(x.device)
        centroids[:, j] = x[rows, pick]
        nearest = torch.minimum(nearest, ((x - centroids[:, j : j + 1]).pow(2) * w).sum(-1))
    return centroids


def _lloyd(
    x: torch.Tensor, k: int, iterations: int, gen: torch.Generator, weights: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    groups, n, d = x.shape
    w = torch.ones_like(x) if weights is None else weights
    centroids = kmeans_plus_plus(x, k, gen, weights)
    codes = assign(x, centroids, weights)
    for _ in range(iterations):
        index = codes[..., None].expand(-1, -1, d)
        sums = x.new_zeros(groups, k, d).scatter_add_(1, index, w * x)  # weighted mean per dimension
        mass = x.new_zeros(groups, k, d).scatter_add_(1, index, w)
        counts = x.new_zeros(groups, k).scatter_add_(1, codes, x.new_ones(groups, n))
        new = sums / mass.clamp_min(1e-30)
        empty = counts == 0
        if empty.any():
            err = ((x - torch.gather(centroids, 1, index)).pow(2) * w).sum(-1)
            for g, j in empty.nonzero().tolist():
                worst = int(err[g].argmax())
                new[g, j] = x[g, worst]
                err[g, worst] = -1.0
        centroids = new
        new_codes = assign(x, centroids, weights)
        if torch.equal(new_codes, codes):
            break
        codes = new_codes
    return centroids, codes


@dataclass
class ResidualCodes:
    """Two-stage additive codes: x ~ primary[codes1] + residual[codes2] (per group)."""

    primary: torch.Tensor  # [G, K1, d]
    residual: torch.Tensor  # [G, K2, d]
    codes1: torch.Tensor  # [G, N] int64
    codes2: torch.Tensor  # [G, N] int64

    def decode(self) -> torch.Tensor:
        return gather_codewords(self.primary, self.codes1) + gather_codewords(self.residual, self.codes2)


def gather_codewords(codebook: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
    """codebook [G, K, d], codes [G, N] -> [G, N, d]; differentiable in the codebook."""
    groups, k, d = codebook.shape
    offsets = (torch.arange(groups, device=codes.device) * k)[:, None]
    flat = codebook.reshape(groups * k, d).index_select(0, (codes + offsets).reshape(-1))  # backward: index_add
    return flat.view(groups, codes.shape[1], d)


def residual_quantize(
    x: torch.Tensor,
    k1: int,
    k2: int,
    iterations: int = 20,
    seed: int = 0,
    max_samples: int = 0,
    weights: torch.Tensor | None = None,
) -> ResidualCodes:
    """Additive/residual product quantization (NOVAQ eq. 2): k-means on x, then on x - c1."""
    primary, codes1 = kmeans(x, k1, iterations, seed, max_samples, weights)
    residual_vectors = x - gather_codewords(primary, codes1)
    residual, codes2 = kmeans(residual_vectors, k2, iterations, seed + 1, max_samples, weights)
    return ResidualCodes(primary, residual, codes1, codes2)


def index_bits(k: int) -> int:
    """Bits to store one index into a codebook of k entries (0 for k = 1)."""
    return math.ceil(math.log2(k)) if k > 1 else 0


def pack_bits(values: torch.Tensor, bits: int) -> torch.Tensor:
    """Pack non-negative integers < 2**bits into a uint8 tensor, little-endian bit order."""
    flat = values.reshape(-1).long()
    if bits == 0:
        return torch.zeros(0, dtype=torch.uint8)
    if flat.numel() and (int(flat.min()) < 0 or int(flat.max()) >= 1 << bits):
        raise ValueError(f"values do not fit in {bits} bits")
    bit_planes = (flat[:, None] >> torch.arange(bits)) & 1  # [n, bits]
    stream = bit_planes.reshape(-1)
    pad = (-stream.numel()) % 8
    stream = torch.cat([stream, stream.new_zeros(pad)]).view(-1, 8)
    return (stream << torch.arange(8)).sum(1).to(torch.uint8)


def unpack_bits(packed: torch.Tensor, bits: int, count: int) -> torch.Tensor:
    """Inverse of :func:`pack_bits`: the first ``count`` values as int64."""
    if bits == 0:
        return torch.zeros(count, dtype=torch.long)
    needed = math.ceil(count * bits / 8)
    if packed.numel() != needed:
        raise ValueError(f"packed indices hold {packed.numel()} bytes, expected {needed} for {count} x {bits} bits")
    stream = ((packed.long()[:, None] >> torch.arange(8)) & 1).reshape(-1)[: count * bits]
    return (stream.view(count, bits) << torch.arange(bits)).sum(1)
