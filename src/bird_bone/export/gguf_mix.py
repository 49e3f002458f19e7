"""A GGUF whose every matrix has its own llama.cpp type, chosen to minimise the predicted loss rise
under a byte budget: the planner.

Candidates per tensor: every type of ``CANDIDATE_TYPES`` whose block divides the row width (types that
need an importance matrix only when there is one), and, for a GGUF source, the tensor's own source
type when its weights are bitwise those of the dequantized source and re-quantizing them without an
importance matrix gives back the source bytes (Q4_1 and Q8_0 do: a lossless choice, predicted loss 0).
Each (tensor, type) is rounded by llama.cpp's own code (``bird_bone.export.ggml_quant``) with the
exported model's H as importance vector; its error weighted by the model's own sensitivity
(``bird_bone.export.sensitivity``) is the predicted loss. A type whose weighted error exceeds
``UNUSABLE`` of the tensor's weighted energy is dropped (the second-order prediction means nothing there).
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from bird_bone.errors import ArtifactError
from bird_bone.export import ggml_quant
from bird_bone.export.sensitivity import Sensitivity

log = logging.getLogger(__name__)
CANDIDATE_TYPES = ("Q8_0", "Q6_K", "Q5_K", "Q5_1", "Q5_0", "IQ4_NL", "IQ4_XS", "Q4_K", "Q4_1", "Q4_0", "Q3_K",
                   "IQ3_S", "IQ3_XXS", "Q2_K", "IQ2_S", "IQ2_XS", "IQ2_XXS")  # fmt: skip
UNUSABLE = 0.25
OVERHEAD_PER_TENSOR = 32  # GGUF data alignment: the most padding one tensor can add


@dataclass
class Choice:
    type: str
    bytes: int
    loss: float  # predicted loss rise per token
    kept: bool = False  # the source's own bytes, re-encoded losslessly


@dataclass
class TensorOptions:
    name: str
    elements: int
    choices: list[Choice]
    importance: np.ndarray | None = None  # what llama.cpp rounds a re-quantized choice with


@dataclass
class Plan:
    types: dict[str, str]  # GGUF tensor name -> ggml type
    kept: list[str]  # tensors left in their source encoding (rounded without importance vector)
    tensor_bytes: int
    loss: float
    counts: dict[str, int] = field(default_factory=dict)

    def imatrix(self, options: list[TensorOptions]) -> dict[str, np.ndarray]:
        """Importance vectors of the re-quantized tensors only."""
        kept = set(self.kept)
        return {o.name: o.importance for o in options if o.name not in kept and o.importance is not None}


def read_matrices(path: str | Path) -> dict[str, np.ndarray]:
    """Every 2-D F32 tensor of GGUF ``path`` as float32 [rows, width] (memory-mapped)."""
    import gguf

    found = {}
    for t in gguf.GGUFReader(path).tensors:
        if len(t.shape) == 2 and t.tensor_type == gguf.GGMLQuantizationType.F32:
            found[t.name] = np.asarray(t.data).reshape(int(t.shape[1]), int(t.shape[0]))
    return found


def source_encodings(path: str | Path | None) -> dict[str, tuple[str, np.ndarray]]:
    """GGUF name -> (type, raw bytes [rows, row_bytes]) of every quantized matrix of a source GGUF."""
    import gguf

    if path is None:
        return {}
    found = {}
    for t in gguf.GGUFReader(path).tensors:
        if len(t.shape) == 2 and t.tensor_type.name in CANDIDATE_TYPES:
            found[t.name] = (t.tensor_type.name, np.asarray(t.data).view(np.uint8).reshape(int(t.shape[1]), -1))
    return found


def _kept(weight: np.ndarray, source: tuple[str, np.ndarray] | None) -> Choice | None:
    """The lossless choice: the source type, if the weights are its dequantized values and llama.cpp
    re-encodes them to the very same bytes without an importance vector."""
    if source is None:
        return None
    type, raw = source
    if raw.shape[0] != weight.shape[0] or not np.array_equal(ggml_quant.dequantize(raw, type), weight):
        return None
    if not np.array_equal(ggml_quant.quantize(weight, type), raw):
        log.warning("%s: %s does not re-encode to the source bytes; not kept", weight.shape, type)
        return None
    return Choice(type, raw.nbytes, 0.0, kept=True)


def tensor_options(
    name: str, weight: np.ndarray, sensitivity: Sensitivity, source=None, types=CANDIDATE_TYPES
) -> TensorOptions:
    """Every usable choice for one matrix, with its bytes and predicted loss."""
    importance = sensitivity.importance()
    energy = sensitivity.loss(weight)
    choices = [c for c in [_kept(weight, source)] if c is not None]
    for type in types:
        if not ggml_quant.fits(type, weight.shape[1]) or (importance is None and ggml_quant.requires_imatrix(type)):
            continue
        error = ggml_quant.round_trip(weight, type, importance) - weight
        loss = sensitivity.loss(error)
        if loss <= UNUSABLE * energy or energy == 0:
            choices.append(Choice(type, weight.shape[0] * ggml_quant.row_bytes(type, weight.shape[1]), loss))
    if not choices:
        raise ArtifactError(f"tensor {name}: rows of {weight.shape[1]} fit no candidate GGUF type")
    return TensorOptions(name, weight.size, choices, importance)


def measure_options(
    matrices: dict[str, np.ndarray],
    sensitivities: dict[str, Sensitivity],
    sources: dict[str, tuple[str, np.ndarray]] | None = None,
    types=CANDIDATE_TYPES,
    threads: int = 2,
) -> list[TensorOptions]:
    """``tensor_options`` of every matrix (llama.cpp's C code runs without the GIL: ``threads`` at once)."""
    missing = sorted(set(matrices) - set(sensitivities))
    if missing:
        raise ArtifactError(f"no sensitivity measured for tensor {missing[0]}")
    sources = sources or {}
    with ThreadPoolExecutor(max(threads, 1)) as pool:
        jobs = [pool.submit(tensor_options, n, w, sensitivities[n], sources.get(n), types) for n, w in matrices.items()]
        return [job.result() for job in jobs]


def _pareto(choices: list[Choice]) -> list[Choice]:
    """Choices by bytes, each strictly lower in loss than every cheaper one."""
    front: list[Choice] = []
    for c in sorted(choices, key=lambda c: (c.bytes, c.loss)):
        if not front or c.loss < front[-1].loss:
            front.append(c)
    return front


def _pick(front: list[Choice], lam: float) -> int:
    """argmin over ``front`` of loss + lam * bytes (first index on ties)."""
    costs = [c.loss + lam * c.bytes for c in front]
    return int(np.argmin(costs))


def _greedy_fill(fronts: list[list[Choice]], picks: list[int], room: int) -> None:
    """Upgrade, one at a time, the choice that saves most loss per added byte and still fits ``room``."""
    while True:
        best, best_ratio = None, 0.0
        for t, front in enumerate(fronts):
            now = front[picks[t]]
            for j in range(picks[t] + 1, len(front)):
                extra = front[j].bytes - now.bytes
                if extra <= room and (now.loss - front[j].loss) / extra > best_ratio:
                    best, best_ratio = (t, j, extra), (now.loss - front[j].loss) / extra
        if best is None:
            return
        t, j, extra = best
        picks[t], room = j, room - extra


def allocate(options: list[TensorOptions], tensor_budget: int) -> Plan:
    """The choice per tensor minimising the summed predicted loss with at most ``tensor_budget`` bytes."""
    # multiple-choice knapsack: Lagrangian relaxation (lambda bisected over the hulls' slopes), then a greedy fill
    fronts = [_pareto(o.choices) for o in options]
    smallest = sum(f[0].bytes for f in fronts)
    if smallest > tensor_budget:
        raise ArtifactError(f"a byte budget of {tensor_budget} tensor bytes is below the smallest plan ({smallest})")
    slopes = sorted(
        {(a.loss - b.loss) / (b.bytes - a.bytes) for f in fronts for i, a in enumerate(f) for b in f[i + 1 :]}
    )
    lams = [0.0, *slopes]  # every breakpoint of the relaxed choice; at the largest, all take the cheapest
    lo, hi = 0, len(lams) - 1  # bytes fall as lambda grows: the smallest lambda whose choice fits
    while lo < hi:
        mid = (lo + hi) // 2
        if sum(f[_pick(f, lams[mid])].bytes for f in fronts) <= tensor_budget:
            hi = mid
        else:
            lo = mid + 1
    picks = [_pick(f, lams[lo]) for f in fronts]
    if sum(f[p].bytes for f, p in zip(fronts, picks)) > tensor_budget:  # a tie broken upwards by rounding
        picks = [0] * len(fronts)
    _greedy_fill(fronts, picks, tensor_budget - sum(f[p].bytes for f, p in zip(fronts, picks)))
    chosen = {o.name: f[p] for o, f, p in zip(options, fronts, picks)}
    counts: dict[str, int] = {}
    for c in chosen.values():
        key = f"{c.type} (kept)" if c.kept else c.type
        counts[key] = counts.get(key, 0) + 1
    return Plan(
        types={n: c.type for n, c in chosen.items()},
        kept=sorted(n for n, c in chosen.items() if c.kept),
        tensor_bytes=sum(c.bytes for c in chosen.values()),
        loss=sum(c.loss for c in chosen.values()),
        counts=dict(sorted(counts.items())),
    )


def plan_bounds(options: list[TensorOptions]) -> tuple[int, int]:
    """Tensor bytes of the smallest plan and of the cheapest plan at the lowest predicted loss."""
    fronts = [_pareto(o.choices) for o in options]
    return sum(f[0].bytes for f in fronts), sum(f[-1].bytes for f in fronts)
