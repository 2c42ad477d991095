"""Enforced rate limits: continuously refilled token buckets, as the real APIs use.

Anthropic and OpenAI describe their limits per minute but enforce them with buckets that
refill continuously, so capacity comes back a little at a time rather than all at once
at the top of each minute. Each bucket here refills at ``limit / 60`` per second and
holds ``burst_s`` seconds of refill: with the default of 60 s a full bucket is one whole
minute's allowance (a client may spend it at once); ``burst_s=1`` holds only one second's
worth, which forces a client to pace itself evenly. Buckets start full.

A request is charged one unit in the requests bucket and its estimated input tokens in
the input-token bucket; it passes only if both have room, and a refused request costs
nothing.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class BucketState:
    """What the rate-limit headers report: the per-minute limit, what is left now, and
    seconds until the bucket is full again."""

    limit: int
    remaining: int
    reset_s: float


@dataclass(frozen=True, slots=True)
class Denial:
    """Why a request was refused and when to come back (whole seconds, at least 1)."""

    bucket: str
    retry_after: int
    message: str


class TokenBucket:
    """``per_minute`` units a minute, refilled continuously, holding ``burst_s`` seconds."""

    def __init__(self, per_minute: int, burst_s: float, now: float) -> None:
        self.limit = per_minute
        self.rate = per_minute / 60.0
        self.capacity = self.rate * burst_s
        self.level = self.capacity
        self.updated = now

    def wait_for(self, amount: float, now: float) -> float:
        """Seconds until ``amount`` fits: 0 if it fits now, ``inf`` if it never can."""
        self._refill(now)
        if amount > self.capacity:
            return math.inf
        return max(0.0, (amount - self.level) / self.rate)

    def take(self, amount: float, now: float) -> None:
        self._refill(now)
        self.level -= amount

    def state(self, now: float) -> BucketState:
        self._refill(now)
        reset = (self.capacity - self.level) / self.rate
        return BucketState(self.limit, math.floor(self.level), reset)

    def _refill(self, now: float) -> None:
        self.level = min(self.capacity, self.level + (now - self.updated) * self.rate)
        self.updated = now


class Limits:
    """The emulator's enforced limits: requests/min and input tokens/min, either optional."""

    def __init__(self, rpm: int | None, itpm: int | None, burst_s: float, clock: Callable[[], float]) -> None:
        now = clock()
        self._clock = clock
        self._buckets: dict[str, TokenBucket] = {}
        if rpm is not None:
            self._buckets["requests"] = TokenBucket(rpm, burst_s, now)
        if itpm is not None:
            self._buckets["input_tokens"] = TokenBucket(itpm, burst_s, now)

    def __bool__(self) -> bool:
        return bool(self._buckets)

    def charge(self, input_tokens: int) -> Denial | None:
        """Take one request and its input tokens, or say why not without taking anything."""
        now = self._clock()
        costs = {"requests": 1.0, "input_tokens": float(input_tokens)}
        for name, bucket in self._buckets.items():
            wait = bucket.wait_for(costs[name], now)
            if wait > 0:
                return _denial(name, bucket, costs[name], wait, now)
        for name, bucket in self._buckets.items():
            bucket.take(costs[name], now)
        return None

    def states(self) -> dict[str, BucketState]:
        now = self._clock()
        return {name: bucket.state(now) for name, bucket in self._buckets.items()}


def _denial(name: str, bucket: TokenBucket, cost: float, wait: float, now: float) -> Denial:
    label = "requests" if name == "requests" else "input tokens"
    if math.isinf(wait):
        # Larger than the whole bucket: no wait helps; say so rather than loop forever.
        return Denial(
            name,
            max(1, math.ceil(bucket.state(now).reset_s)),
            f"This request needs {int(cost)} {label}, more than the bucket of "
            f"{int(bucket.capacity)} can ever hold (limit {bucket.limit} {label} per minute).",
        )
    return Denial(
        name,
        max(1, math.ceil(wait)),
        f"This request would exceed the rate limit of {bucket.limit} {label} per minute. "
        f"Retry after {math.ceil(wait)} s, or slow down.",
    )
