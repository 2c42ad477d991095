"""Adaptive voting: stop asking once the answer is settled.

Two stopping rules, checked after every vote that arrives:

* decided: the votes still outstanding could not change the winner even if all of them
  went to the runner-up. Stopping here never changes the outcome of the full vote.
* Beta posterior (after Adaptive-Consistency, Aggarwal et al. 2023): with the leader's
  count ``a`` and the runner-up's ``b``, the leader's share p between the two has the
  posterior Beta(a + 1, b + 1). Adaptive-Consistency stops when P(p > 1/2) is high; a
  vote has a fixed number of voters, so what matters is whether the ``r`` votes still
  outstanding could change the result. Each is taken to go to the leader with
  probability p and otherwise to the runner-up (the worst case for the leader), and the
  vote stops once the probability that they tie or overturn it (a beta-binomial tail) is
  at most ``1 - confidence``. This stops earlier than "decided", at a small, chosen risk,
  and earlier than the plain P(p > 1/2) rule when few votes remain: measured in
  ``bench/voting_cost.py``.

Voters run in waves of ``wave`` at a time (a rolling window: a new voter starts as soon as
one finishes); when a rule fires, the calls still running are cancelled so they stop
costing, and the voters never started are not asked.
"""

from __future__ import annotations

from dataclasses import dataclass
from math import ceil, comb, exp, lgamma

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
        if self.confidence is None or lead <= runner:
            return None
        risk = change_probability(round(lead), round(runner), ceil(outstanding))
        if risk <= 1 - self.confidence + 1e-12:  # exactly at the level counts: 1 - 0.95 is not 0.05 in floats
            return (
                f"settled: P(the remaining votes change the winner) = {risk:.3f} <= {1 - self.confidence:.2f}"
            )
        return None


def leader_posterior(a: int, b: int) -> float:
    """P(p > 1/2) for p ~ Beta(a + 1, b + 1), exactly, for whole counts.

    Uses the identity P(Beta(α, β) <= x) = P(Binomial(α + β - 1, x) >= α), so with
    x = 1/2: P(p > 1/2) = P(Binomial(a + b + 1, 1/2) <= a)."""
    n = a + b + 1
    return float(sum(comb(n, k) for k in range(a + 1))) / float(2**n)


def change_probability(a: int, b: int, remaining: int) -> float:
    """P(the runner-up ties or overtakes the leader) after ``remaining`` more votes, each
    going to the leader with probability p ~ Beta(a + 1, b + 1) and else to the runner-up.

    The runner-up needs x >= ceil((a - b + remaining) / 2) of them; x follows a
    beta-binomial distribution: P(x) = C(r, x) B(x + b + 1, r - x + a + 1) / B(b + 1, a + 1)."""
    if remaining <= 0:
        return 0.0 if a > b else 1.0
    need = max(0, -(-(a - b + remaining) // 2))
    base = _log_beta(b + 1, a + 1)
    return sum(
        comb(remaining, x) * exp(_log_beta(x + b + 1, remaining - x + a + 1) - base)
        for x in range(need, remaining + 1)
    )


def _log_beta(x: float, y: float) -> float:
    return lgamma(x) + lgamma(y) - lgamma(x + y)
