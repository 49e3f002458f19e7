"""Mixed-type GGUF export under the quality budget: the smallest planned file whose llama.cpp
perplexity meets ``budget.max_ppl_increase`` over the seed model, found by bisection over byte budgets.

One F32 GGUF (``write_gguf``, metadata carried over from the template) and one table of measured
choices (``bird_bone.export.gguf_mix``) serve every candidate; each candidate is one llama.cpp quantizer
run (``bird_bone.export.gguf_mix_write``) and one llama.cpp scoring.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from bird_bone import budget as quality
from bird_bone.errors import ArtifactError
from bird_bone.export.ggml_gptq import gptq_quantize, input_grams
from bird_bone.export.gguf import check_architecture, gguf_architecture, permute_for_rope, write_gguf
from bird_bone.export.gguf_mix import (
    OVERHEAD_PER_TENSOR,
    Plan,
    TensorOptions,
    allocate,
    measure_options,
    plan_bounds,  # fmt: skip
    read_matrices,
    source_encodings,
)
from bird_bone.export.gguf_mix_write import quantize_plan
from bird_bone.export.gguf_template import template_path
from bird_bone.export.sensitivity import Sensitivity, measure_sensitivity
from bird_bone.models.adapters import mlp_widths

log = logging.getLogger(__name__)


@dataclass
class Candidate:
    target_bytes: int
    bytes: int
    bits_per_weight: float
    perplexity: float  # on the evaluation text
    meets: bool  # on every text scored
    predicted_loss: float
    tensor_types: dict[str, int] = field(default_factory=dict)
    perplexities: dict[str, float] = field(default_factory=dict)  # every text scored, the evaluation text first


@dataclass
class MixedResult:
    path: str
    chosen: Candidate
    candidates: list[Candidate]
    meets: bool
    reason: str

    def to_dict(self) -> dict:
        return asdict(self)


def _gguf_names(model: nn.Module) -> Callable[[str], str]:
    """State-dict weight name -> GGUF tensor name of ``model``'s llama.cpp architecture."""
    import gguf

    family, c = check_architecture(model), model.config
    arch = gguf_architecture(family, mlp_widths(model))
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH[arch.upper()], c.num_hidden_layers)

    def gguf_name(name: str) -> str:
        target = names.get_name(name, try_suffixes=(".weight",))
        if target is None:
            raise ArtifactError(f"tensor {name} has no GGUF name for llama.cpp's {arch} architecture")
        return target

    return gguf_name


def gguf_sensitivities(model: nn.Module, sensitivities: dict[str, Sensitivity]) -> dict[str, Sensitivity]:
    """The sensitivities re-keyed by GGUF tensor name, rows reordered as ``gguf_tensors`` reorders them."""
    family, c, gguf_name = check_architecture(model), model.config, _gguf_names(model)
    found = {}
    for name, s in sensitivities.items():
        heads = {"q_proj.weight": c.num_attention_heads, "k_proj.weight": c.num_key_value_heads}
        head = next((h for k, h in heads.items() if name.endswith(k)), None)
        if family.permute_qk and head and s.rows is not None:
            s = Sensitivity(permute_for_rope(torch.from_numpy(s.rows), head).numpy(), s.columns, s.elements)
        found[gguf_name(name)] = s
    return found


@dataclass
class MixedPlanner:
    """An F32 GGUF of the model and the measured choices of its matrices: plans at any byte budget.
    With ``grams`` (X^T X of each matrix's input, by GGUF name), re-quantized matrices are rounded with
    GPTQ's error feedback (``bird_bone.export.ggml_gptq``) instead of llama.cpp's per-block rounding."""

    f32: Path
    options: list[TensorOptions]
    fixed_bytes: int  # what the file holds beyond the planned matrices (metadata, norms, padding)
    parameters: int
    grams: dict[str, np.ndarray] = field(default_factory=dict)
    threads: int = 2
    _rounded: dict[tuple[str, str], np.ndarray] = field(default_factory=dict, repr=False)

    def plan(self, target_bytes: int) -> Plan:
        return allocate(self.options, target_bytes - self.fixed_bytes)

    def bounds(self) -> tuple[int, int]:
        lo, hi = plan_bounds(self.options)
        return lo + self.fixed_bytes, hi + self.fixed_bytes

    def write(self, plan: Plan, target: Path, threads: int = 0) -> Path:
        return quantize_plan(self.f32, target, plan.types, plan.imatrix(self.options), threads, self.rounded(plan))

    def rounded(self, plan: Plan) -> dict[str, np.ndarray]:
        """GPTQ bytes of every re-quantized matrix of ``plan`` that has an input Gram (computed once per type)."""
        todo = [(n, t) for n, t in plan.types.items() if n in self.grams and n not in plan.kept]
        missing = [key for key in todo if key not in self._rounded]
        if missing:
            matrices, importance = read_matrices(self.f32), {o.name: o.importance for o in self.options}
            with ThreadPoolExecutor(max(self.threads, 1)) as pool:
                jobs = {key: pool.submit(gptq_quantize, matrices[key[0]], self.grams[key[0]], key[1],
                                         importance.get(key[0])) for key in missing}  # fmt: skip
                self._rounded.update({key: job.result() for key, job in jobs.items()})
        return {name: self._rounded[(name, type)] for name, type in todo}


def prepare(model, tokenizer, calibration: torch.Tensor, workdir: Path, metadata: dict | None = None,
            pre_tokenizer: str | None = None, name: str | None = None, threads: int = 2,
            template: str | Path | None = None, rounding: str = "imatrix") -> MixedPlanner:  # fmt: skip
    """Write the F32 GGUF, measure the model's sensitivity on ``calibration`` windows and every
    (matrix, type) choice's bytes and predicted loss. ``template``: the source GGUF (default: the one
    named by ``metadata['provenance']``), whose metadata is carried over and whose encodings may be kept.
    ``rounding``: ``gptq`` (error feedback through each input's Gram, measured on ``calibration``) or
    ``imatrix`` (llama.cpp's own per-block rounding with the importance vectors)."""
    import gguf

    template = template or template_path((metadata or {}).get("provenance"))
    f32 = Path(write_gguf(model, tokenizer, workdir / "f32.gguf", "F32", metadata, pre_tokenizer, name, template).path)
    sensitivities = gguf_sensitivities(model, measure_sensitivity(model, calibration))
    matrices = read_matrices(f32)
    options = measure_options(matrices, sensitivities, source_encodings(template), threads=threads)
    tensors = gguf.GGUFReader(f32).tensors
    fixed = f32.stat().st_size - sum(int(t.n_bytes) for t in tensors if t.name in matrices)
    fixed += OVERHEAD_PER_TENSOR * len(tensors) + 4096  # padding and the quantizer's own keys
    grams = {}
    if rounding == "gptq":
        gguf_name = _gguf_names(model)
        grams = {gguf_name(n): g for n, g in input_grams(model, calibration).items()}
    elif rounding != "imatrix":
        raise ArtifactError(f"unknown rounding {rounding!r}: gptq or imatrix")
    return MixedPlanner(f32, options, fixed, sum(int(t.n_elements) for t in tensors), grams, threads)


def _texts(value) -> dict[str, float]:
    """A score or seed as {text: perplexity}; a single number is the evaluation text's."""
    return dict(value) if isinstance(value, dict) else {"evaluation": float(value)}


def _candidate(planner: MixedPlanner, plan: Plan, target: int, out: Path, score, seeds: dict, max_increase: float,
               threads):  # fmt: skip
    path = planner.write(plan, out / f"mixed-{target}.gguf", threads)
    size = path.stat().st_size
    ppl = _texts(score(path))
    meets = all(quality.meets(ppl[t], seed, max_increase) for t, seed in seeds.items())
    first = ppl[next(iter(seeds))]
    found = Candidate(target, size, 8 * size / planner.parameters, first, meets, plan.loss, plan.counts, ppl)
    shown = ", ".join(f"{t} {v:.3f}" for t, v in ppl.items())
    log.info("mixed GGUF at %d bytes: %.2f bpw, llama.cpp perplexity %s (%s)", size, found.bits_per_weight, shown,
             "meets the budget" if meets else "over the budget")  # fmt: skip
    return found, path


def search(planner: MixedPlanner, score: Callable[[Path], float | dict[str, float]], seed_perplexity,
           max_increase: float, out: Path, target_bytes: int | None = None, steps: int = 5,
           threads: int = 0) -> MixedResult:  # fmt: skip
    """The smallest planned file whose ``score`` meets the budget (bisection over byte budgets, ``steps``
    scorings after the largest plan's), or the best one found; at ``target_bytes`` only that plan.
    ``score`` and ``seed_perplexity``: one perplexity, or one per text ({text: perplexity}, the evaluation
    text first); a candidate meets the budget when it does on every text."""
    seeds = _texts(seed_perplexity)
    ceilings = ", ".join(f"{t} {quality.ceiling(s, max_increase):.3f}" for t, s in seeds.items())
    tried: dict[int, tuple[Candidate, Path]] = {}
    scored: dict[tuple, tuple[Candidate, Path]] = {}  # one file and one scoring per distinct plan

    def attempt(target: int) -> Candidate:
        plan = planner.plan(target)
        key = (tuple(sorted(plan.types.items())), tuple(sorted(plan.kept)))
        if key not in scored:
            scored[key] = _candidate(planner, plan, target, out, score, seeds, max_increase, threads)
        tried[target] = scored[key]
        return tried[target][0]

    lo, hi = planner.bounds()
    if target_bytes is not None:
        found = attempt(max(target_bytes, lo))
        why = "meets" if found.meets else "breaks"
        reason = f"planned at the target {target_bytes} bytes: perplexity {_shown(found)} {why} ({ceilings})"
        return _result(tried, found, reason)
    if not attempt(hi).meets:
        best = min((c for c, _ in tried.values()), key=lambda c: c.perplexity)
        return _result(tried, best, f"no plan meets the ceiling ({ceilings}): the best found, {_shown(best)}")
    fail, ok = lo, hi
    if attempt(lo).meets:
        ok = lo
    else:
        for _ in range(steps):
            mid = (fail + ok) // 2
            if attempt(mid).meets:
                ok = mid
            else:
                fail = mid
    chosen = tried[ok][0]
    seeds_shown = ", ".join(f"{t} {s:.3f}" for t, s in seeds.items())
    distinct = len({id(c) for c, _ in tried.values()})
    reason = (
        f"smallest of {distinct} candidates within the ceiling ({ceilings}: seed {seeds_shown} "
        f"+ {100 * max_increase:g} %)"
    )
    return _result(tried, chosen, reason)


def _shown(c: Candidate) -> str:
    return ", ".join(f"{t} {v:.3f}" for t, v in c.perplexities.items())


def _result(tried: dict, chosen: Candidate, reason: str) -> MixedResult:
    keep = tried[chosen.target_bytes][1]
    for _, path in tried.values():
        if path != keep:
            path.unlink(missing_ok=True)
    candidates = sorted({id(c): c for c, _ in tried.values()}.values(), key=lambda c: c.bytes)
    return MixedResult(str(keep), chosen, candidates, chosen.meets, reason)


def export_mixed(model, tokenizer, path: str | Path, calibration: torch.Tensor, score: Callable,
                 seed_perplexity, max_increase: float, target_bytes: int | None = None,
                 target_bpw: float | None = None, metadata: dict | None = None, steps: int = 5, threads: int = 0,
                 **gguf_args) -> MixedResult:  # fmt: skip
    """The budgeted mixed GGUF of ``model`` at ``path`` (see module docstring)."""
    path = Path(path)
    with tempfile.TemporaryDirectory(prefix=".gguf-mix-", dir=path.parent if path.parent.exists() else None) as tmp:
        planner = prepare(model, tokenizer, calibration, Path(tmp), metadata, threads=max(threads, 2), **gguf_args)
        if target_bpw is not None:
            target_bytes = bpw_target(planner.parameters, target_bpw)
        result = search(planner, score, seed_perplexity, max_increase, Path(tmp), target_bytes, steps, threads)
        shutil.move(result.path, path)
    result.path = str(path)
    return result


def bpw_target(planner_parameters: int, bits_per_weight: float) -> int:
    """File bytes of ``bits_per_weight`` over every parameter."""
    return int(np.ceil(planner_parameters * bits_per_weight / 8))
