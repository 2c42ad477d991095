"""Limits: small objects that decide when a call may start.

Concurrency and rate are separate and compose: ``Limits([Concurrency(8), RequestRate(50),
InputTokenRate(40_000)])`` holds a call until every limit lets it through, concurrency
first, so the rate decision is taken at the moment the call is really sent.

Rate limits use GCRA, the Generic Cell Rate Algorithm (virtual scheduling form), weighted
by cost: each unit of a per-minute limit has an emission interval ``T = 60 / limit``
seconds; the limiter keeps a theoretical arrival time ``tat``; a call costing ``c`` units may
start when it fits within the burst tolerance, ``max(tat, now) + c * T - now <= burst``,
or when nothing is owed (``tat <= now``: a call bigger than the burst goes, alone), and
then pushes ``tat`` to ``max(tat, now) + c * T``; at most ``burst`` seconds of quota go at
once. This is a token bucket seen from the side: the same long-run rate, no bookkeeping timer, and a
burst tolerance we choose. We choose a small one (half a second of quota by default), so
a fresh run does not fire a full minute of requests at once, which is what provider
limits punish (Anthropic enforces limits over shorter intervals than a minute), and we
pace at 98% of the limit by default: see ``Rate`` for why both stay below the limit.

Token limits charge an estimate at dispatch and ``settle`` against the real usage: an
over-estimate gives quota back, an under-estimate takes more. The limiter also learns:
``learn`` applies a ``retry-after`` as a pause for every call, and a provider header saying
its bucket is further from full than we believe (its reset time, or failing that its
remaining count) moves ``tat`` to match. A call costing more than the
whole per-minute limit could never run and fails at once with ``RequestTooLarge``.

What a provider says is not trusted blindly: a learned pause (a ``retry-after``, or a
reset time) is clamped to ``max_pause`` seconds (a minute by default), so one gateway
answering ``retry-after: 86400`` cannot stop a connection for a day, and an absurd
``remaining`` (below zero) is ignored with a debug log on ``quorum.limits``.

The asyncio primitives (a semaphore, a lock) are made lazily for the event loop that
uses them, so a connection made at import time serves several ``asyncio.run`` calls.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Protocol

from quorum.engine import checks
from quorum.engine.clock import SYSTEM_CLOCK, Clock
from quorum.engine.cost import Cost
from quorum.errors import ConfigError, RequestTooLarge
from quorum.llm.ratelimits import Bucket, RateLimitInfo
from quorum.llm.types import Usage

_EPSILON_S = 1e-9  # waits shorter than this are float noise, not quota
MAX_PAUSE_S = 60.0  # the longest pause a provider's headers may impose on a connection

log = logging.getLogger("quorum.limits")


class Limit(Protocol):
    async def acquire(self, cost: Cost) -> None:
        """Wait until the call may start; raise ``RequestTooLarge`` if it never could."""
        ...

    def release(self, cost: Cost, usage: Usage | None) -> None:
        """The call ended; ``usage`` is what it really used (``None`` if it failed)."""
        ...

    def learn(self, info: RateLimitInfo | None) -> None:
        """Take in what the provider's headers said."""
        ...


class Concurrency:
    """At most ``limit`` calls in flight."""

    def __init__(self, limit: int) -> None:
        self.limit = checks.count("concurrency", limit)
        self._slots: asyncio.Semaphore | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    async def acquire(self, cost: Cost) -> None:
        loop = asyncio.get_running_loop()
        if loop is not self._loop or self._slots is None:
            # A semaphore belongs to one event loop: each loop that uses this limit gets
            # its own (a module-level connection serves several asyncio.run calls).
            self._slots, self._loop = asyncio.Semaphore(self.limit), loop
        await self._slots.acquire()

    def release(self, cost: Cost, usage: Usage | None) -> None:
        if self._slots is not None:
            self._slots.release()

    def learn(self, info: RateLimitInfo | None) -> None:
        return None


class Rate:
    """A per-minute limit on one kind of unit, enforced with cost-weighted GCRA.

    ``burst_s`` is the burst tolerance: how many seconds of quota may be spent ahead of
    the steady rate. ``margin`` is the share of the limit kept in reserve: calls are
    scheduled at ``(1 - margin) * per_minute``. ``header`` names the provider bucket
    this limit mirrors.

    Why both are below what the provider allows: a provider may enforce its limit over
    short intervals (Anthropic: "60 RPM may be enforced as 1 request per second"). Its
    bucket then holds one second of quota, and a client that spends that whole second at
    once and then paces at exactly the limit leaves no room: a request that reaches the
    provider a millisecond earlier than its schedule (network and event-loop jitter) is
    refused with a 429, and the retry-after pauses every call. Half a second of burst
    leaves half a second of jitter room against a one-second bucket; and where one unit
    is more than the burst (60 requests a minute or fewer), only a slightly slower pace
    helps: 2% in reserve leaves 20 ms of room at 60 requests a minute.
    """

    unit = "units"
    header = ""

    def __init__(
        self,
        per_minute: float,
        *,
        burst_s: float = 0.5,
        margin: float = 0.02,
        max_pause: float = MAX_PAUSE_S,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        self.per_minute = checks.positive(f"a per-minute limit ({self.unit})", per_minute)
        if not 0 <= checks.non_negative("margin", margin) < 1:
            raise ConfigError(f"margin is the share of the limit kept in reserve, in [0, 1); got {margin}")
        self.interval = 60.0 / (self.per_minute * (1.0 - margin))  # T: seconds per unit
        self.burst = max(checks.positive("burst_s", burst_s), self.interval)  # at least one unit
        self.max_pause = checks.positive("max_pause", max_pause, unit=" seconds")
        self.clock = clock
        self._tat = clock.now()  # start empty-handed: no minute's burst at start
        self._paused_until = 0.0
        self._turn: asyncio.Lock | None = None  # FIFO: waiters are admitted in arrival order
        self._loop: asyncio.AbstractEventLoop | None = None

    def units(self, cost: Cost) -> float:
        return float(cost.requests)

    def used(self, usage: Usage) -> float | None:
        return None  # requests settle at dispatch: one call is one request

    async def acquire(self, cost: Cost) -> None:
        units = self.units(cost)
        if units > self.per_minute:
            raise RequestTooLarge(
                f"one request needs about {units:.0f} {self.unit}, more than the whole limit of "
                f"{self.per_minute:.0f} {self.unit} per minute: it could never be sent. Shorten "
                f"the prompt or lower max_tokens, or raise the limit if your account allows more."
            )
        async with self._lock():
            while (wait := self._wait_s(units)) > 0:
                await self.clock.sleep(wait)
            self._tat = max(self._tat, self.clock.now()) + units * self.interval

    def _lock(self) -> asyncio.Lock:
        loop = asyncio.get_running_loop()
        if loop is not self._loop or self._turn is None:
            self._turn, self._loop = asyncio.Lock(), loop  # one lock per event loop
        return self._turn

    def _wait_s(self, units: float) -> float:
        now = self.clock.now()
        wait = max(self._paused_until - now, self._start_at(units) - now)
        return wait if wait > _EPSILON_S else 0.0

    def _start_at(self, units: float) -> float:
        """The earliest start: once the call fits in the burst, or once nothing is owed."""
        return self._tat + min(units * self.interval - self.burst, 0.0)

    def release(self, cost: Cost, usage: Usage | None) -> None:
        actual = self.used(usage) if usage is not None else None
        if actual is not None:
            self._tat += (actual - self.units(cost)) * self.interval

    def give_back(self, cost: Cost) -> None:
        """Quota charged but never spent (the unspent part of a lease a worker held)
        returns to the schedule: ``tat`` moves back by its units' emission intervals."""
        self._tat -= self.units(cost) * self.interval

    def learn(self, info: RateLimitInfo | None) -> None:
        if not info:
            return
        now = self.clock.now()
        if info.retry_after:
            pause = self._clamped(info.retry_after, "retry-after")
            self._paused_until = max(self._paused_until, now + pause)
        bucket = info.buckets.get(self.header)
        owed = _owed_s(bucket, self.per_minute, self.interval) if bucket is not None else None
        if owed is not None:
            owed = self._clamped(owed, f"{self.header} reset")
        if owed is not None and owed > self._tat - now:
            # Someone else shares this quota, or our estimates ran low: align with the
            # provider's count so the next calls wait for quota that really exists.
            self._tat = now + owed

    def _clamped(self, seconds: float, what: str) -> float:
        """A learned pause, at most ``max_pause`` (NaN reads as no pause)."""
        if not seconds <= self.max_pause:  # also true for NaN and inf
            log.debug("%s of %r s clamped to %g s (%s)", what, seconds, self.max_pause, self.unit)
            return self.max_pause if not math.isnan(seconds) else 0.0
        return seconds

    @property
    def available_at(self) -> float:
        """When a one-unit call could start (for progress displays)."""
        return max(self._paused_until, self._start_at(1.0))


class RequestRate(Rate):
    """Requests per minute."""

    unit = "requests"
    header = "requests"


class InputTokenRate(Rate):
    """Input tokens per minute (cached tokens included, as providers count them)."""

    unit = "input tokens"
    header = "input_tokens"

    def units(self, cost: Cost) -> float:
        return float(cost.input_tokens)

    def used(self, usage: Usage) -> float | None:
        return float(usage.prompt_tokens)


class OutputTokenRate(Rate):
    """Output tokens per minute, charged ``max_tokens`` at dispatch as Anthropic does."""

    unit = "output tokens"
    header = "output_tokens"

    def units(self, cost: Cost) -> float:
        return float(cost.output_tokens)

    def used(self, usage: Usage) -> float | None:
        return float(usage.output_tokens)


class TokenRate(Rate):
    """Input and output tokens together per minute (OpenAI's ``tokens`` bucket)."""

    unit = "tokens"
    header = "tokens"

    def units(self, cost: Cost) -> float:
        return float(cost.input_tokens + cost.output_tokens)

    def used(self, usage: Usage) -> float | None:
        return float(usage.total_tokens)


class Limits:
    """Several limits held together, in order; released in reverse order."""

    def __init__(self, limits: Sequence[Limit] = ()) -> None:
        self.limits = list(limits)

    @asynccontextmanager
    async def hold(self, cost: Cost) -> AsyncIterator[Settlement]:
        held: list[Limit] = []
        settlement = Settlement()
        try:
            for limit in self.limits:
                await limit.acquire(cost)
                held.append(limit)
            yield settlement
        finally:
            for limit in reversed(held):
                limit.release(cost, settlement.usage)

    def learn(self, info: RateLimitInfo | None) -> None:
        for limit in self.limits:
            limit.learn(info)

    def __bool__(self) -> bool:
        return bool(self.limits)


def _owed_s(bucket: Bucket, per_minute: float, interval: float) -> float | None:
    """Seconds until the provider's bucket is full again: its ``tat - now``.

    The reset time says it directly, whatever the bucket holds. ``remaining`` is read
    only without a reset time, as a count out of the whole per-minute limit: a provider
    that enforces its limit over a shorter interval holds less than a minute's worth, and
    taking its ``remaining`` for a minute's count would stall every call for a minute.
    """
    if bucket.reset_s is not None:
        return bucket.reset_s
    if bucket.remaining is not None and bucket.remaining < 0:
        log.debug("ignored an absurd remaining count of %d (limit %g a minute)", bucket.remaining, per_minute)
        return None
    if bucket.remaining is not None:
        return max(0.0, per_minute - bucket.remaining) * interval
    return None


class Settlement:
    """Filled in by the caller with the real usage before the limits are released."""

    __slots__ = ("usage",)

    def __init__(self) -> None:
        self.usage: Usage | None = None
