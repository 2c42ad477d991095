"""Adaptive voting: stop asking once the answer is settled.

Two stopping rules, checked after every vote that arrives:

* decided: the votes still outstanding could not change the winner even if all of them
  went to the runner-up. Stopping here never changes the outcome of the full vote.
* Beta posterior (Adaptive-Consistency, Aggarwal et al. 2023): with the leader's count
  ``a`` and the runner-up's ``b``, the probability that the leader is the true majority
  is taken as P(p > 1/2) for p ~ Beta(a + 1, b + 1); stop once it reaches ``confidence``.
  This stops earlier than "decided" on long votes, at a small, chosen risk.

Voters run in waves of ``wave`` at a time (a rolling window: a new voter starts as soon as
one finishes); when a rule fires, the calls still running are cancelled so they stop
costing, and the voters never started are not asked.
"""

from __future__ import annotations

from dataclasses import dataclass
from math import comb

from quorum.errors import ConfigError
from quorum.patterns.aggregation import Tally


@dataclass(frozen=True, slots=True)
class Adaptive:
    wave: int | None = 3  # voters in flight at once; None: all at once
    confidence: float | None = 0.95  # Beta-posterior rule; None: only the "decided" rule
    min_votes: int = 2

    def __post_init__(self) -> None:
        if self.wave is not None and self.wave < 1:
            raise ConfigError(f"Adaptive(wave=...) must be at least 1, got {self.wave}")
        if self.confidence is not None and not 0.5 < self.confidence < 1:
            raise ConfigError(f"Adaptive(confidence=...) must be in (0.5, 1), got {self.confidence}")

    def settled(self, tally: Tally, outstanding: float, counted: int) -> str | None:
        """Why the vote can stop now (``None`` to keep going). ``outstanding`` is the
        largest total weight the votes not yet in could still add."""
        ranked = tally.ranked()
        if counted < self.min_votes or not ranked:
            return None
        lead = ranked[0][1]
        runner = ranked[1][1] if len(ranked) > 1 else 0.0
        if lead > runner + outstanding:
            return "decided: the remaining votes cannot change the winner"
        if self.confidence is not None and leader_posterior(round(lead), round(runner)) >= self.confidence:
            return f"settled: P(leader is the majority) >= {self.confidence}"
        return None


def leader_posterior(a: int, b: int) -> float:
    """P(p > 1/2) for p ~ Beta(a + 1, b + 1), exactly, for whole counts.

    Uses the identity P(Beta(α, β) <= x) = P(Binomial(α + β - 1, x) >= α), so with
    x = 1/2: P(p > 1/2) = P(Binomial(a + b + 1, 1/2) <= a)."""
    n = a + b + 1
    return float(sum(comb(n, k) for k in range(a + 1))) / float(2**n)
