"""The low-rank config (``lowrank`` in conf/base/parameters_heal.yml), beside :mod:`.svd`."""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field

from bird_bone.params import Params


class LowRankParams(Params):
    section: ClassVar[str] = "lowrank"
    enabled: bool = Field(True, description="run the low-rank factorization stage after the waves")
    modules: list[str] = Field(
        default_factory=list,
        description="projection names to factorize (e.g. [o_proj]); empty: none, the stage only reports",
    )
    energy: float = Field(0.95, gt=0, le=1, description="share of (activation-weighted) spectral energy kept")
    activation_aware: bool = Field(True, description="scale input columns by calibration RMS (ASVD) before SVD")
    allow_masked: bool = Field(
        False, description="also factorize pruned projections (their mask is retired: the product is dense)"
    )
