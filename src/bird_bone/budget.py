"""The quality budget a whole run honours: how far the exported artifact's perplexity may rise over
the seed model's on the evaluation text, and optionally how many bytes it may take.

Plain functions over numbers, shared by the loop's stop-loss (each wave is judged against the budget,
not only against the previous wave) and the export (the smallest artifact that meets the budget)."""

from __future__ import annotations

import math


def ceiling(seed_perplexity: float, max_increase: float) -> float:
    """The highest perplexity the budget allows: seed * (1 + max_increase)."""
    return seed_perplexity * (1.0 + max_increase)


def meets(perplexity: float, seed_perplexity: float, max_increase: float) -> bool:
    """True when ``perplexity`` is finite and at most the budget's ceiling."""
    return math.isfinite(perplexity) and perplexity <= ceiling(seed_perplexity, max_increase)


def increase(perplexity: float, seed_perplexity: float) -> float:
    """Relative rise over the seed model (0.03 is 3 %); infinite for a non-finite perplexity."""
    return perplexity / seed_perplexity - 1.0 if math.isfinite(perplexity) else math.inf
