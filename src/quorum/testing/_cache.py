"""Prompt-cache emulation, with Anthropic's timing rule.

A request marks cache breakpoints (``cache_control`` on a system or message block); the
prefix up to and including each breakpoint is cacheable. The longest prefix already in
the cache is *read*; the tokens from there to the last breakpoint are *written*; the
rest of the prompt is plain input. The rule that matters for fan-outs: an entry exists
only once the response that writes it has started. So N calls sent together with one
shared prefix all pay a write, while one leader call followed (after its first byte) by
the rest pays one write and N-1 reads. Entries live ``ttl_s`` seconds (5 minutes), and
a read refreshes them, as at Anthropic.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Prefix:
    """One cacheable prefix: a digest of its exact content, and its size in tokens."""

    key: str
    tokens: int


@dataclass(frozen=True, slots=True)
class CachePlan:
    """How one request's prompt splits into cache reads, cache writes and plain input."""

    read_tokens: int = 0
    write_tokens: int = 0
    to_store: tuple[Prefix, ...] = ()


class PromptCache:
    def __init__(self, ttl_s: float, clock: Callable[[], float], min_tokens: int = 0) -> None:
        self._ttl = ttl_s
        self._clock = clock
        self._min_tokens = min_tokens
        self._expiry: dict[str, float] = {}

    def plan(self, prefixes: Sequence[Prefix]) -> CachePlan:
        """Split a prompt by its breakpoints (shortest prefix first); refresh what is read."""
        usable = [p for p in prefixes if p.tokens >= self._min_tokens]
        if not usable:
            return CachePlan()
        now = self._clock()
        hit = next((p for p in reversed(usable) if self._expiry.get(p.key, 0.0) > now), None)
        read = hit.tokens if hit is not None else 0
        if hit is not None:
            self._expiry[hit.key] = now + self._ttl
        longest = usable[-1]
        write = max(0, longest.tokens - read)
        pending = tuple(p for p in usable if p.tokens > read)
        return CachePlan(read, write, pending if write else ())

    def store(self, plan: CachePlan) -> None:
        """Called when the writing response starts: only then can others read the entry."""
        if not plan.to_store:
            return
        now = self._clock()
        if len(self._expiry) > 10_000:
            self._expiry = {k: t for k, t in self._expiry.items() if t > now}
        for prefix in plan.to_store:
            self._expiry[prefix.key] = now + self._ttl
