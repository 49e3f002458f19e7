"""The pruning config (``prune`` in conf/base/parameters_prune.yml): the method, by its registry
name, with its options, and how the steps reach the target. :meth:`PruneParams.options` and
:meth:`PruneParams.amount` are the one place where these fields become the arguments of
:func:`bird_bone.prune.step.prune_step`."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field, field_validator

from bird_bone.params import Params
from bird_bone.prune.registry import PRUNERS
from bird_bone.prune.schedule import sparsity_schedule


class StructuredParams(Params):
    fraction: float = Field(0.1, ge=0, lt=1, description="MLP neurons removed per wave, of the original width")
    max_fraction_per_cluster: float = Field(0.15, gt=0, le=1, description="cap per activation cluster per wave")
    clusters: int = Field(8, ge=1, description="k-means clusters of neurons per layer")
    pattern_tokens: int = Field(256, ge=8, description="calibration tokens a neuron's pattern spans")
    width_multiple: int = Field(
        32, ge=1, description="round kept MLP widths down to a multiple (32: every llama.cpp block)"
    )


class PruneParams(Params):
    section: ClassVar[str] = "prune"
    method: Literal[tuple(PRUNERS)] = Field("structured", description="a name of bird_bone.prune.registry.PRUNERS")
    target_sparsity: float = Field(0.5, ge=0, lt=1, description="sparsity of decoder linears after the last wave")
    waves: int = Field(1, ge=1, description="steps to reach the target (slow radius)")
    schedule: Literal["linear", "cubic"] = "linear"
    pattern: str = Field("unstructured", pattern=r"^(unstructured|[1-9][0-9]*:[1-9][0-9]*)$", description="or N:M")
    blocksize: int = Field(128, ge=1, description="SparseGPT columns per block")
    percdamp: float = Field(0.01, gt=0, description="SparseGPT dampening, fraction of mean diag(H)")
    true_sequential: bool | Literal["auto"] = Field(
        "auto",
        description="calibrate each linear on the pruned ones before it (one pass per layer); false: the reference "
        "order; auto: true-sequential except Wanda N:M",
    )
    prune_embeddings: bool = Field(False, description="also prune token embeddings (magnitude, per row)")
    save_gram: bool = Field(False, description="store X^T X per linear in the activation statistics (large)")
    structured: StructuredParams = Field(default_factory=StructuredParams)

    @property
    def nm(self) -> tuple[int, int]:
        if self.pattern == "unstructured":
            return 0, 0
        n, m = map(int, self.pattern.split(":"))
        return n, m

    @field_validator("pattern")
    @classmethod
    def _n_below_m(cls, value: str) -> str:
        if value != "unstructured" and not int(value.split(":")[0]) < int(value.split(":")[1]):
            raise ValueError(f"N:M pattern needs N < M, got {value}")
        return value

    @property
    def removes_neurons(self) -> bool:
        return PRUNERS[self.method].remove is not None

    def target(self, step: int) -> float:
        """The scheduled cumulative sparsity after step ``step`` (1-based)."""
        return sparsity_schedule(self.target_sparsity, self.waves, self.schedule)[step - 1]

    def amount(self, step: int) -> float:
        """What :func:`~bird_bone.prune.step.prune_step` takes at step ``step``: the scheduled
        sparsity, or for a method that removes neurons the cumulative fraction of neurons."""
        return self.structured.fraction * step if self.removes_neurons else self.target(step)

    def options(self) -> dict:
        """The chosen method's own keywords of :func:`~bird_bone.prune.step.prune_step`."""
        if self.removes_neurons:
            return self.structured.model_dump(exclude={"fraction"})
        n, m = self.nm
        return {
            "n": n,
            "m": m,
            "blocksize": self.blocksize,
            "percdamp": self.percdamp,
            "include_embeddings": self.prune_embeddings,
            "true_sequential": self.true_sequential,
        }
