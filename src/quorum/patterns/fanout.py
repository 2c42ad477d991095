"""Prompt-cache-aware fan-out: one leader call first, the rest once it has begun.

Anthropic creates a cache entry only when the first response that writes it begins, so N
calls sent at once with one shared cacheable prefix pay N cache writes (1.25x the input
price each). Sending one leader first and releasing the others when its first byte
arrives makes the rest read the entry instead (0.1x): one write and N-1 reads. The cost
is one time-to-first-byte of extra latency; the leader releases the others even if it
fails, so nothing waits forever.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from dataclasses import dataclass, replace

from quorum.engine.cost import estimate
from quorum.llm.pricing import price_of
from quorum.llm.provider import Provider
from quorum.llm.types import Reply, Request, Usage

# Anthropic caches prefixes of at least 1,024 tokens (2,048 on Haiku models); shorter ones
# are sent uncached, and holding the others back would only add latency.
MIN_CACHE_TOKENS = 1024


def worth_caching(llm: Provider, request: Request, min_tokens: int = MIN_CACHE_TOKENS) -> bool:
    if not llm.capabilities.supports_cache:
        return False
    shared = request.prefix or request.system or ""
    return estimate(Request.of("", system=shared)).input_tokens >= min_tokens


class LeaderFirst:
    """Holds every call but the leader's until the leader's answer starts."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self._released = asyncio.Event()
        if not enabled:
            self._released.set()

    async def complete(self, llm: Provider, request: Request, *, leader: bool) -> Reply:
        if leader and self.enabled:
            try:
                return await llm.complete(replace(request, on_first_byte=self._released.set))
            finally:
                self._released.set()
        await self._released.wait()
        return await llm.complete(request)


@dataclass(frozen=True, slots=True)
class CacheReport:
    """Cache use of a fan-out and what it saved against every call writing the prefix."""

    writes: int  # tokens written to the cache
    reads: int  # tokens read from it
    saved_dollars: float | None  # None when the model's price is unknown

    @classmethod
    def of(cls, model: str, usages: Iterable[Usage]) -> CacheReport:
        total = sum(usages, Usage())
        price = price_of(model)
        saved = None
        if price is not None:
            saved = total.cache_read_tokens * (price.cache_write - price.cache_read) / 1_000_000
        return cls(total.cache_write_tokens, total.cache_read_tokens, saved)

    def line(self) -> str:
        dollars = "unknown" if self.saved_dollars is None else f"${self.saved_dollars:.4f}"
        return f"prompt cache: {self.writes:,} tokens written, {self.reads:,} read; saved {dollars}"
