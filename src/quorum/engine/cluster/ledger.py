"""The account's rate state for a whole cluster: leases of capacity, settled afterwards.

One ``AccountLedger`` (inside the named limiter actor, ``actors.py``) holds the account's
GCRA state: the very ``Rate`` objects of ``quorum.engine.limits``, so the arithmetic is
the engine's (cost-weighted GCRA, burst tolerance, 2% margin, learning from headers).
What changes is who asks. A worker does not ask per call: it asks for a *lease*, a small
bundle of requests, input and output tokens (a fraction of a second's worth, sized to the
calls it has waiting), and spends it locally. A lease is granted through ``Rate.acquire``
(so leases are paced exactly as single calls would be), and what comes back later is
settled:

* ``give_back``: the unspent part of a lease returns to the schedule (``Rate.give_back``);
* ``settle``: estimated against real token usage, the engine's ``Rate.release``;
* ``learn``: a ``retry-after`` or rate-limit headers seen by any worker pause or slow the
  schedule for every worker (``Rate.learn``);
* ``reap``: a lease whose worker said nothing for ``ttl_s + grace_s`` (a dead worker) is
  returned whole. It is not known how much of it the worker sent before it died; a lease
  is a fraction of a second's quota, which the burst tolerance and margin absorb.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

from quorum.engine.clock import SYSTEM_CLOCK, Clock
from quorum.engine.cost import Cost
from quorum.engine.limits import Rate
from quorum.errors import RequestTooLarge
from quorum.llm.ratelimits import RateLimitInfo
from quorum.llm.types import Usage

NO_COST = Cost(0, 0, 0)


@dataclass(frozen=True, slots=True)
class Lease:
    """Capacity granted to one worker, to spend within ``ttl_s`` seconds of receipt."""

    id: int
    granted: Cost
    ttl_s: float


@dataclass(frozen=True, slots=True)
class Report:
    """What a worker tells the limiter: the unspent part of lease ``lease_id`` (if it
    returns one), estimates and real usage of calls that ended, and what the provider's
    headers said (ages already taken off)."""

    lease_id: int | None = None
    unspent: Cost = NO_COST
    estimated: Cost = NO_COST
    used: Usage = Usage()
    info: RateLimitInfo | None = None


@dataclass
class LedgerStats:
    """Totals since the ledger started, for tests and benchmarks."""

    leases: int = 0
    granted: Cost = NO_COST
    returned: Cost = NO_COST
    reaped: int = 0
    pauses: int = 0
    by_worker: dict[str, int] = field(default_factory=dict)


@dataclass(slots=True)
class _Open:
    worker: str
    granted: Cost
    expires_at: float


class AccountLedger:
    """The account's ``rates`` and the leases taken against them."""

    def __init__(
        self, rates: list[Rate], *, ttl_s: float = 1.0, grace_s: float = 1.0, clock: Clock = SYSTEM_CLOCK
    ) -> None:
        self.rates = rates
        self.ttl_s = ttl_s
        self.grace_s = grace_s
        self.clock = clock
        self.stats = LedgerStats()
        self._open: dict[int, _Open] = {}
        self._ids = itertools.count(1)

    async def lease(self, worker: str, want: Cost, report: Report | None = None) -> Lease:
        """Take in ``report``, then wait until ``want`` fits the account's rates and grant it."""
        if report is not None:
            self.take(report)
        self.reap()
        self._check_size(want)
        for rate in self.rates:  # each waits its turn (FIFO), as Limits.hold does
            await rate.acquire(want)
        lease = Lease(next(self._ids), want, self.ttl_s)
        self._open[lease.id] = _Open(worker, want, self.clock.now() + self.ttl_s + self.grace_s)
        self.stats.leases += 1
        self.stats.granted = _plus(self.stats.granted, want)
        self.stats.by_worker[worker] = self.stats.by_worker.get(worker, 0) + 1
        return lease

    def take(self, report: Report) -> None:
        """Settle what a worker reports: unspent capacity, real usage, headers."""
        if report.lease_id is not None and self._open.pop(report.lease_id, None) is not None:
            self._give_back(report.unspent)
        if report.estimated != NO_COST:
            for rate in self.rates:
                rate.release(report.estimated, report.used)
        if report.info:
            self.learn(report.info)

    def learn(self, info: RateLimitInfo) -> None:
        if info.retry_after:
            self.stats.pauses += 1
        for rate in self.rates:
            rate.learn(info)

    def reap(self) -> None:
        """Return the leases of workers that went silent past their lease's expiry."""
        now = self.clock.now()
        for lease_id in [i for i, o in self._open.items() if o.expires_at <= now]:
            self._give_back(self._open.pop(lease_id).granted)
            self.stats.reaped += 1

    def _give_back(self, unspent: Cost) -> None:
        if unspent == NO_COST:
            return
        self.stats.returned = _plus(self.stats.returned, unspent)
        for rate in self.rates:
            rate.give_back(unspent)

    def _check_size(self, want: Cost) -> None:
        for rate in self.rates:
            if rate.units(want) > rate.per_minute:
                raise RequestTooLarge(
                    f"a lease of {rate.units(want):.0f} {rate.unit} is more than the whole limit of "
                    f"{rate.per_minute:.0f} {rate.unit} per minute: shorten the prompt or lower max_tokens"
                )

    @property
    def open_leases(self) -> int:
        return len(self._open)


def _plus(a: Cost, b: Cost) -> Cost:
    return Cost(a.requests + b.requests, a.input_tokens + b.input_tokens, a.output_tokens + b.output_tokens)
