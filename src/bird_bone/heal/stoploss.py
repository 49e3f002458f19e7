"""Stop-loss over pruning waves: revert when quality falls too fast for too long.

A wave whose perplexity rose by more than ``max_increase`` (relative) over the wave before it is a
strike. ``patience`` consecutive strikes revert the model to the last accepted wave (the one before
the strikes began) and stop pruning, as early stopping with best-weight restore does; a good wave
after fewer strikes accepts the waves on probation.

A non-finite perplexity (NaN or inf: the heal diverged, the weights went bad) is never compared, since
every comparison with NaN is false: it is a failed wave that reverts at once, whatever the patience.

The run's quality budget (:func:`bird_bone.budget.meets` against the seed model) is judged before
the strikes: a wave that breaks it reverts at once, whatever the patience, to the wave before it (the last one
within the budget, since every wave before it was judged the same way) and stops pruning. So the
model the loop passes on never breaks the budget, even when the waves run out before a second strike.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from bird_bone.budget import meets


@dataclass(frozen=True)
class LoopState:
    """Where the wave loop stands after a wave (JSON-ready through :meth:`to_dict`)."""

    wave: int = 0  # the wave this state follows; 0 = the dense baseline
    accepted_wave: int = 0  # the last wave whose model is accepted
    accepted_perplexity: float | None = None
    previous_perplexity: float | None = None
    strikes: int = 0
    stopped: bool = False
    status: str = "baseline"  # accepted | probation | reverted | skipped

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> LoopState:
        return cls(**{k: data[k] for k in cls.__dataclass_fields__ if k in data})


def relative_increase(new: float, old: float) -> float:
    return (new - old) / old


def stop_loss_step(
    state: LoopState,
    wave: int,
    perplexity: float,
    max_increase: float,
    patience: int,
    seed_perplexity: float | None = None,
    budget_increase: float | None = None,
) -> LoopState:
    """The state after ``wave`` scored ``perplexity``; ``status`` says what to do with its model.
    With ``seed_perplexity`` and ``budget_increase`` (the rise over the seed the loop may use), a
    wave that breaks that budget is reverted to the one before it."""
    if state.stopped:
        return LoopState(**{**state.to_dict(), "wave": wave, "status": "skipped"})
    budgeted = seed_perplexity is not None and budget_increase is not None
    if budgeted and not meets(perplexity, seed_perplexity, budget_increase):
        previous = state.previous_perplexity
        return LoopState(wave, state.wave, previous, previous, state.strikes + 1, True, "reverted")
    previous = state.previous_perplexity if state.previous_perplexity is not None else perplexity
    failed = not math.isfinite(perplexity)
    strike = failed or relative_increase(perplexity, previous) > max_increase
    strikes = state.strikes + 1 if strike else 0
    if strike and (failed or strikes >= patience):
        return LoopState(
            wave=wave,
            accepted_wave=state.accepted_wave,
            accepted_perplexity=state.accepted_perplexity,
            previous_perplexity=state.accepted_perplexity,
            strikes=strikes,
            stopped=True,
            status="reverted",
        )
    if strike:
        return LoopState(wave, state.accepted_wave, state.accepted_perplexity, perplexity, strikes, False, "probation")
    return LoopState(wave, wave, perplexity, perplexity, 0, False, "accepted")
