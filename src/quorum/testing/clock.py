"""A virtual clock for tests: sleeping advances time instead of waiting.

Pass it as ``clock=`` to ``quorum.connect``, the limits and ``quorum.run``; minutes of
backoff and rate limiting then pass in milliseconds. Time jumps to the earliest sleeper's
wake-up once every other task has had a chance to run (the "autojump" of trio's
``MockClock``), so concurrent sleepers wake in the right order at the right times.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools


class VirtualClock:
    def __init__(self, start: float = 0.0, *, settle_rounds: int = 20) -> None:
        self._now = start
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._order = itertools.count()
        self._driver: asyncio.Task[None] | None = None
        self._settle_rounds = settle_rounds
        self.slept: list[float] = []  # every requested sleep, for assertions

    def now(self) -> float:
        return self._now

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        if seconds <= 0:
            await asyncio.sleep(0)
            return
        wake: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (self._now + seconds, next(self._order), wake))
        if self._driver is None or self._driver.done():
            self._driver = asyncio.get_running_loop().create_task(self._drive())
        await wake

    def advance(self, seconds: float) -> None:
        """Move time forward by hand (for code that reads ``now`` without sleeping)."""
        self._now += seconds

    async def _drive(self) -> None:
        while self._sleepers:
            for _ in range(self._settle_rounds):  # let every runnable task reach its next wait
                await asyncio.sleep(0)
            when, _, wake = heapq.heappop(self._sleepers)
            self._now = max(self._now, when)
            if not wake.done():
                wake.set_result(None)
