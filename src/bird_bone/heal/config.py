"""The configs of the loop's methods beside them: QLoRA micro-heal (``heal``, :mod:`.qlora`), RigL
regrowth (``regrow``, :mod:`.regrow`) and the stop-loss (``stop_loss``, :mod:`.stoploss`), as in
conf/base/parameters_heal.yml."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field, model_validator

from bird_bone.params import Params

LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


class HealParams(Params):
    section: ClassVar[str] = "heal"
    enabled: bool = Field(True, description="QLoRA micro-heal after each pruning wave")
    steps: int = Field(40, ge=0, description="optimiser steps per wave (the design: 200-500)")
    base: Literal["nf4", "full"] = Field("full", description="full: LoRA on the float base; nf4: QLoRA (4-bit base)")
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
    window_length: int = Field(256, ge=2, description="tokens per training sequence, cut from the heal text")
    data: Literal["teacher_samples", "calibration"] = Field(
        "teacher_samples",
        description="heal text: sequences the dense teacher samples (LLM-QAT, no dataset) or the calibration windows",
    )
    samples: int = Field(32, ge=1, description="teacher_samples: sequences sampled once per run")
    sample_length: int = Field(256, ge=2, description="teacher_samples: tokens per sampled sequence")
    kd_weight: float = Field(1.0, ge=0, description="weight of KL(teacher || student) to the dense model's logits")
    lm_weight: float = Field(0.0, ge=0, description="weight of the next-token cross-entropy on the heal text")
    temperature: float = Field(2.0, gt=0, description="distillation temperature T")
    seed: int = 0

    @model_validator(mode="after")
    def _some_loss(self):
        if self.enabled and self.steps and self.kd_weight == 0 and self.lm_weight == 0:
            raise ValueError("heal.kd_weight and heal.lm_weight are both 0: the heal would train nothing")
        return self

    def options(self) -> dict:
        """The keywords of :func:`bird_bone.loop.steps.heal_step` besides the step count (0 when
        not ``enabled``), the teacher and the seed (``seed`` + the wave's number); the heal text
        (``data``, ``samples``, ``sample_length``) is made once per run, before the waves."""
        return self.model_dump(exclude={"enabled", "steps", "seed", "data", "samples", "sample_length"})


class RegrowParams(Params):
    section: ClassVar[str] = "regrow"
    enabled: bool = Field(True, description="RigL regrowth when pruning raised the loss by more than epsilon")
    epsilon: float = Field(0.05, ge=0, description="relative rise of calibration loss that triggers regrowth")
    max_fraction: float = Field(0.05, ge=0, le=1, description="share of each layer's pruned weights re-opened")
    windows: int = Field(4, ge=1, description="calibration windows for the loss check and the gradients")
    batch_size: int = Field(2, ge=1)


class StopLossParams(Params):
    section: ClassVar[str] = "stop_loss"
    enabled: bool = Field(True, description="judge every wave (off: every wave is kept, budget or not)")
    max_ppl_increase: float = Field(0.03, ge=0, description="relative perplexity rise over the previous wave")
    patience: int = Field(2, ge=1, description="consecutive waves over the limit before reverting")
    # The loop may spend this share of budget.max_ppl_increase (against the seed model); the export's
    # quantizer gets the rest. A wave over the loop's share is reverted and the loop stops.
    budget_share: float = Field(0.5, ge=0, le=1, description="share of budget.max_ppl_increase the loop may use")

    def budget_increase(self, max_ppl_increase: float) -> float:
        """The rise over the seed model the loop's waves may reach."""
        return self.budget_share * max_ppl_increase
