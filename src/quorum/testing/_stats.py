"""What the emulator saw: requests by path and status, connections, concurrency, cache use.

Tests read these counters to check what a workflow did on the wire: how many calls it
made, how many it abandoned (cancelled calls close their connection mid-request, which
counts as *aborted*), how many ran at once, and how many prompt-cache writes and reads
a fan-out paid for.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

NO_RESPONSE = 0  # the status recorded when a request ended without any response
"""Status recorded for a request that got no response: reset, hang, or client gone."""


@dataclass
class EmulatorStats:
    """Counters, updated live while the emulator serves.

    ``requests`` counts finished requests by ``(path, status)``; status ``0`` means no
    response was sent (an injected reset or hang, or the client left first).
    ``aborted`` counts connections the client closed while a request was still being
    answered: what a cancelled call looks like from the server. The ``batch_`` counters
    cover the batch APIs: batches and items submitted, and the items billed (those that
    succeeded, once their batch ended) with their tokens and cost at the batch price,
    half the online one (``batch_cost_usd`` counts models with a known price only).
    """

    requests: Counter[tuple[str, int]] = field(default_factory=Counter)
    connections_open: int = 0
    connections_total: int = 0
    aborted: int = 0
    in_flight: int = 0
    max_in_flight: int = 0
    cache_writes: int = 0
    cache_reads: int = 0
    cache_write_tokens: int = 0
    cache_read_tokens: int = 0
    batches_created: int = 0
    batch_items: int = 0
    batch_items_billed: int = 0
    batch_input_tokens: int = 0
    batch_output_tokens: int = 0
    batch_cost_usd: float = 0.0

    def count(self, path: str | None = None, status: int | None = None) -> int:
        """Finished requests, optionally only those for one path and/or one status."""
        return sum(
            n
            for (p, s), n in self.requests.items()
            if (path is None or p == path) and (status is None or s == status)
        )

    @property
    def total(self) -> int:
        """Every finished request."""
        return sum(self.requests.values())

    def request_started(self) -> None:
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)

    def request_finished(self, path: str, status: int | None) -> None:
        self.in_flight -= 1
        self.requests[(path, status or NO_RESPONSE)] += 1

    def as_dict(self) -> dict[str, Any]:
        """A JSON-friendly copy, e.g. for a benchmark report."""
        by_path: dict[str, dict[str, int]] = {}
        for (path, status), n in sorted(self.requests.items()):
            by_path.setdefault(path, {})[str(status)] = n
        return {
            "requests": by_path,
            "connections_open": self.connections_open,
            "connections_total": self.connections_total,
            "aborted": self.aborted,
            "in_flight": self.in_flight,
            "max_in_flight": self.max_in_flight,
            "cache_writes": self.cache_writes,
            "cache_reads": self.cache_reads,
            "cache_write_tokens": self.cache_write_tokens,
            "cache_read_tokens": self.cache_read_tokens,
            "batches_created": self.batches_created,
            "batch_items": self.batch_items,
            "batch_items_billed": self.batch_items_billed,
            "batch_input_tokens": self.batch_input_tokens,
            "batch_output_tokens": self.batch_output_tokens,
            "batch_cost_usd": round(self.batch_cost_usd, 6),
        }
