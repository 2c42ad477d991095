"""Caps on what a run may spend.

Dispatch stops once a cap is reached: the calls already in flight finish (their cost is
real), and the tasks not yet started are reported skipped. Under concurrency, the check
alone is not enough (32 calls may all pass it before the first one is billed), so every
call through a ``Connection`` first *reserves* its estimated cost (its input-token
estimate and its ``max_tokens``, priced), and the reservation is settled against the real
usage when the call ends. A call is sent only while what is spent plus what is reserved
stays under the cap; one that does not fit waits for the calls in flight to settle, and
is refused once nothing is in flight to give room back.

The guarantee: the spend exceeds a cap by at most the last admitted call (the one that
found room just under the cap), plus the amount by which input-token estimates ran low,
however many calls run at once. ``docs/performance.md`` has the measured figure.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field

from quorum.engine import checks
from quorum.engine.cost import Cost
from quorum.errors import BudgetExceeded
from quorum.llm.pricing import Price
from quorum.llm.types import Usage


@dataclass
class Budget:
    """A dollar cap, a token cap, or both, shared by every call made under it (nested
    runs included). A dollar cap needs a price for the model it pays for: a connection
    refuses to call an unpriced model under one (``quorum.llm.pricing.set_price`` gives it
    a price). Calls made outside a connection with no known price count their tokens and
    are counted in ``unpriced``."""

    dollars: float | None = None
    tokens: int | None = None
    spent_dollars: float = 0.0
    spent_tokens: int = 0
    unpriced: int = field(default=0)
    reserved_dollars: float = field(default=0.0, init=False, repr=False)
    reserved_tokens: int = field(default=0, init=False, repr=False)
    _holds: int = field(default=0, init=False, repr=False, compare=False)
    _waiters: list[asyncio.Future[None]] = field(default_factory=list, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.dollars is not None:
            self.dollars = checks.non_negative("a dollar budget (Budget(dollars=...))", self.dollars)
        if self.tokens is not None:
            self.tokens = checks.count("a token budget (Budget(tokens=...))", self.tokens, minimum=0)

    def charge(self, usage: Usage, cost: float | None) -> None:
        self.spent_tokens += usage.total_tokens
        if cost is None:
            self.unpriced += 1
        else:
            self.spent_dollars += cost

    @property
    def exhausted(self) -> str | None:
        """Why the budget is spent, or ``None`` while there is some left."""
        if self.dollars is not None and self.spent_dollars >= self.dollars:
            return f"dollar budget ${self.dollars:.4f} reached (spent ${self.spent_dollars:.4f})"
        if self.tokens is not None and self.spent_tokens >= self.tokens:
            return f"token budget {self.tokens:,} reached (spent {self.spent_tokens:,})"
        return None

    def check(self) -> None:
        reason = self.exhausted
        if reason:
            raise BudgetExceeded(reason)

    # --- reservations: what the calls in flight may still cost --------------------------

    def fits(self) -> bool:
        """Whether another call may start: spent plus reserved is under every cap."""
        if self.dollars is not None and self.spent_dollars + self.reserved_dollars >= self.dollars:
            return False
        return self.tokens is None or self.spent_tokens + self.reserved_tokens < self.tokens

    @property
    def in_flight(self) -> bool:
        """Whether some reserved call has yet to settle (and so may give room back)."""
        return self._holds > 0

    def reserve(self, dollars: float, tokens: int) -> None:
        self._holds += 1
        self.reserved_dollars += dollars
        self.reserved_tokens += tokens

    def release(self, dollars: float, tokens: int) -> None:
        """A reserved call ended (it is charged separately): wake the calls waiting for room."""
        self._holds -= 1
        if self._holds <= 0:  # exactly zero, whatever float rounding left behind
            self._holds, self.reserved_dollars, self.reserved_tokens = 0, 0.0, 0
        else:
            self.reserved_dollars -= dollars
            self.reserved_tokens -= tokens
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    async def settled(self) -> None:
        """Until some call in flight under this budget settles."""
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        await waiter


# The budgets the current task holds a reservation on: a provider that itself calls
# through another connection (a relay) must not wait for its own caller's reservation.
_held: ContextVar[tuple[Budget, ...]] = ContextVar("quorum_reserved", default=())


class Reservation:
    """One call's estimated cost, held against its budgets until ``settle``."""

    __slots__ = ("budgets", "dollars", "token", "tokens")

    def __init__(self, budgets: Sequence[Budget], dollars: float, tokens: int) -> None:
        self.budgets, self.dollars, self.tokens = budgets, dollars, tokens
        for budget in budgets:
            budget.reserve(dollars, tokens)
        self.token = _held.set(_held.get() + tuple(budgets))

    def settle(self) -> None:
        _held.reset(self.token)
        for budget in self.budgets:
            budget.release(self.dollars, self.tokens)


async def reserve(budgets: Sequence[Budget], cost: Cost, price: Price | None, model: str) -> Reservation:
    """Reserve a call's estimated cost (input estimate plus ``max_tokens``, priced) against
    every budget, waiting while calls in flight hold the room; ``BudgetExceeded`` once a
    cap is reached with nothing in flight to give room back (or only this task's own
    reservation, which cannot settle before this call does)."""
    tokens = cost.input_tokens + cost.output_tokens
    dollars = 0.0
    if price is not None:
        dollars = (cost.input_tokens * price.input + cost.output_tokens * price.output) / 1_000_000
    while (blocked := next((b for b in budgets if not b.fits()), None)) is not None:
        if not blocked.in_flight or any(held is blocked for held in _held.get()):
            raise BudgetExceeded(blocked.exhausted or f"budget reached before a call to {model}")
        await blocked.settled()
    return Reservation(budgets, dollars, tokens)
