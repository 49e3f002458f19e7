"""The configs of the loop's methods beside them: QLoRA micro-heal (``heal``, :mod:`.qlora`), RigL
regrowth (``regrow``, :mod:`.regrow`) and the stop-loss (``stop_loss``, :mod:`.stoploss`), as in
conf/base/parameters_heal.yml."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field

from bird_bone.params import Params

LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


class HealParams(Params):
    section: ClassVar[str] = "heal"
    enabled: bool = Field(True, description="QLoRA micro-heal after each pruning wave")
    steps: int = Field(40, ge=0, description="optimiser steps per wave (the design: 200-500)")
    base: Literal["nf4", "full"] = Field("nf4", description="nf4: QLoRA (bitsandbytes 4-bit base); full: LoRA")
    rank: int = Field(8, ge=1, description="LoRA rank r")
    alpha: float = Field(16.0, gt=0, description="LoRA alpha (delta scaled by alpha / r)")
    dropout: float = Field(0.0, ge=0, lt=1)
    learning_rate: float = Field(3e-4, gt=0)
    target_modules: list[str] = Field(
        default_factory=lambda: list(LORA_TARGETS),
        min_length=1,
        description="projection names that get LoRA adapters",
    )
    batch_size: int = Field(2, ge=1)
    window_length: int = Field(256, ge=2, description="tokens per training sequence, cut from calibration windows")
    kd_weight: float = Field(0.0, ge=0, description="weight of KL(teacher || student) to the dense model's logits")
    temperature: float = Field(2.0, gt=0, description="distillation temperature T")
    seed: int = 0

    def options(self) -> dict:
        """The keywords of :func:`bird_bone.loop.steps.heal_step` besides the step count (0 when
        not ``enabled``), the teacher and the seed (``seed`` + the wave's number)."""
        return self.model_dump(exclude={"enabled", "steps", "seed"})


class RegrowParams(Params):
    section: ClassVar[str] = "regrow"
    enabled: bool = Field(True, description="RigL regrowth when pruning raised the loss by more than epsilon")
    epsilon: float = Field(0.05, ge=0, description="relative rise of calibration loss that triggers regrowth")
    max_fraction: float = Field(0.05, ge=0, le=1, description="share of each layer's pruned weights re-opened")
    windows: int = Field(4, ge=1, description="calibration windows for the loss check and the gradients")
    batch_size: int = Field(2, ge=1)


class StopLossParams(Params):
    section: ClassVar[str] = "stop_loss"
    enabled: bool = True
    max_ppl_increase: float = Field(0.03, ge=0, description="relative perplexity rise over the previous wave")
    patience: int = Field(2, ge=1, description="consecutive waves over the limit before reverting")
