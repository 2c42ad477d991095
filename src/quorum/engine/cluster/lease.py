"""The worker's side of the cluster limiter: a ``Limit`` that spends leases.

``LeasedLimit`` has the interface of every limit in ``quorum.engine.limits``, so a
worker's ``Connection`` holds it like any other. ``acquire`` draws a call's estimated
cost from the lease in hand; only when the lease runs short or expires does it ask the
``Grantor`` (the limiter actor) for the next one, returning the unspent rest and the
usage settled since the last word in the same message. A lease is sized to the calls
waiting here (at least one call's worth, at most ``chunk``), so a busy worker asks a
few times a second, not once per call.

``release`` collects estimated against real usage and sends it with the next request
(or after ``report_every_s`` when the worker is quiet). ``learn`` sends a ``retry-after``
at once, and drops the lease in hand, so one worker's 429 pauses every worker; other
headers travel with the next report, their reset times aged by the time they waited.
"""

from __future__ import annotations

import asyncio
import math
from dataclasses import replace
from typing import Protocol

from quorum.engine.clock import SYSTEM_CLOCK, Clock
from quorum.engine.cluster.ledger import NO_COST, Lease, Report
from quorum.engine.cost import Cost
from quorum.llm.ratelimits import RateLimitInfo
from quorum.llm.types import Usage

SAFETY_S = 0.05  # a lease is spent no later than this before its expiry


class Grantor(Protocol):
    async def lease(self, worker: str, want: Cost, report: Report | None) -> Lease:
        """Wait for and grant ``want``, after taking in ``report``."""
        ...

    def report(self, report: Report) -> None:
        """Take in ``report`` without waiting for an answer."""
        ...


class LeasedLimit:
    """A ``Limit`` drawing on leases of an account's rates from ``grantor``."""

    def __init__(
        self,
        grantor: Grantor,
        worker: str,
        *,
        chunk: Cost,
        report_every_s: float = 0.25,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        self.grantor = grantor
        self.worker = worker
        self.chunk = chunk
        self.report_every_s = report_every_s
        self.clock = clock
        self._lease_id: int | None = None
        self._left = NO_COST
        self._expires = -math.inf
        self._turn = asyncio.Lock()
        self._waiting = 0
        self._estimated = NO_COST
        self._used = Usage()
        self._info: tuple[RateLimitInfo, float] | None = None
        self._last_report = clock.now()

    async def acquire(self, cost: Cost) -> None:
        self._waiting += 1
        try:
            async with self._turn:
                while not self._covers(cost):
                    await self._renew(cost)
                self._left = _minus(self._left, cost)
        finally:
            self._waiting -= 1

    def release(self, cost: Cost, usage: Usage | None) -> None:
        if usage is None:
            return  # as in Rate.release: a failed call keeps its estimate charged
        self._estimated = _plus(self._estimated, replace(cost, requests=0))
        self._used = self._used + usage
        if self.clock.now() - self._last_report >= self.report_every_s and not self._turn.locked():
            self.grantor.report(self._report(with_lease=False))

    def learn(self, info: RateLimitInfo | None) -> None:
        if not info:
            return
        self._info = (info, self.clock.now())
        if info.retry_after:
            self._expires = -math.inf  # spend nothing more of this lease: the account pauses
            self.grantor.report(self._report(with_lease=not self._turn.locked()))

    async def close(self) -> None:
        """Return the lease in hand and send what is unsettled (the worker is done)."""
        async with self._turn:
            self.grantor.report(self._report(with_lease=True))

    def _covers(self, cost: Cost) -> bool:
        if self.clock.now() >= self._expires - SAFETY_S:
            return False
        left = self._left
        return (
            cost.requests <= left.requests
            and cost.input_tokens <= left.input_tokens
            and cost.output_tokens <= left.output_tokens
        )

    async def _renew(self, cost: Cost) -> None:
        report = self._report(with_lease=True)
        lease = await self.grantor.lease(self.worker, self._want(cost), report)
        self._lease_id, self._left = lease.id, lease.granted
        self._expires = self.clock.now() + lease.ttl_s

    def _want(self, cost: Cost) -> Cost:
        """As many calls like this one as are waiting, within ``chunk``; at least one."""
        calls = max(1, self._waiting)
        for need, cap in (
            (cost.requests, self.chunk.requests),
            (cost.input_tokens, self.chunk.input_tokens),
            (cost.output_tokens, self.chunk.output_tokens),
        ):
            if need > 0 and cap > 0:
                calls = min(calls, max(1, cap // need))
        return Cost(cost.requests * calls, cost.input_tokens * calls, cost.output_tokens * calls)

    def _report(self, *, with_lease: bool) -> Report:
        report = Report(estimated=self._estimated, used=self._used, info=self._aged_info())
        if with_lease and self._lease_id is not None:
            report = replace(report, lease_id=self._lease_id, unspent=self._left)
            self._lease_id, self._left, self._expires = None, NO_COST, -math.inf
        self._estimated, self._used, self._info = NO_COST, Usage(), None
        self._last_report = self.clock.now()
        return report

    def _aged_info(self) -> RateLimitInfo | None:
        """The last headers seen, with their waits shortened by the time since."""
        if self._info is None:
            return None
        info, seen = self._info
        age = self.clock.now() - seen
        buckets = {
            name: replace(b, reset_s=max(0.0, b.reset_s - age)) if b.reset_s is not None else b
            for name, b in info.buckets.items()
        }
        retry = max(0.0, info.retry_after - age) if info.retry_after else None
        return RateLimitInfo(buckets=buckets, retry_after=retry or None)


def _plus(a: Cost, b: Cost) -> Cost:
    return Cost(a.requests + b.requests, a.input_tokens + b.input_tokens, a.output_tokens + b.output_tokens)


def _minus(a: Cost, b: Cost) -> Cost:
    return Cost(a.requests - b.requests, a.input_tokens - b.input_tokens, a.output_tokens - b.output_tokens)
