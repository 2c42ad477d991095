"""What both emulated batch APIs share: a batch's life, its items' fates, and the bill.

A batch is answered by the same rules as online calls: each item is parsed and answered
when the batch is created (so a bad item fails the same way it would online), and its
outcome is revealed once the batch ends, ``time_s`` seconds later. On top of the rules, a
share of items is made to error (an ``api_error``, as a provider's own trouble) or to
expire (as when the 24 hours run out). Each item finishes at its own moment within the
batch's time; a cancel keeps what finished before it and cancels the rest. Results come
back in an order other than the input's, as at both providers: clients must join on
``custom_id``. Billed items (the succeeded ones) count in the statistics at the batch
price, half the online one.
"""

from __future__ import annotations

import itertools
import random
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

from quorum.errors import ConfigError
from quorum.llm.pricing import cost_of
from quorum.llm.types import Usage
from quorum.testing._stats import EmulatorStats

BATCH_PRICE = 0.5  # both providers bill batch tokens at half the online price
DAY_S = 24 * 3600
ItemKind = Literal["succeeded", "errored", "expired", "canceled"]


@dataclass(frozen=True, slots=True)
class BatchOptions:
    """``time_s``: seconds from create until a batch ends; ``errored`` and ``expired``:
    shares of items that end so whatever the rules say; ``max_requests`` and
    ``max_bytes``: a batch's size limits (``None``: the provider's own)."""

    time_s: float = 1.0
    errored: float = 0.0
    expired: float = 0.0
    max_requests: int | None = None
    max_bytes: int | None = None

    def __post_init__(self) -> None:
        if not self.time_s >= 0:
            raise ConfigError(f"batch_time is seconds until a batch ends: must be >= 0, got {self.time_s}")
        for name, share in (("batch_errored", self.errored), ("batch_expired", self.expired)):
            if not 0.0 <= share <= 1.0:
                raise ConfigError(
                    f"{name} is a share of a batch's items: must be between 0 and 1, got {share}"
                )
        if self.errored + self.expired > 1.0 + 1e-9:
            raise ConfigError("batch_errored and batch_expired add up to more than 1")
        for name, limit in (("batch_max_requests", self.max_requests), ("batch_max_bytes", self.max_bytes)):
            if limit is not None and limit < 1:
                raise ConfigError(f"{name} must be at least 1, got {limit}")

    def size_limits(self, requests: int, megabytes: int) -> tuple[int, int]:
        """These options' limits, else the provider's (``requests``, ``megabytes`` MB)."""
        return self.max_requests or requests, self.max_bytes or megabytes * 1024 * 1024


@dataclass(slots=True)
class Item:
    """One request of a batch and its fate. ``status`` and ``body`` are the HTTP answer
    the request would have had online (``body`` a parsed JSON object)."""

    custom_id: str
    kind: ItemKind
    status: int = 200
    body: dict[str, Any] | None = None
    model: str = ""
    usage: Usage | None = None
    done_at: float = 0.0  # the moment (monotonic) it finishes


@dataclass(slots=True)
class Batch:
    id: str
    items: list[Item]  # in the order results are given: not the input's
    created: float  # wall clock, for the API's timestamps
    started: float  # monotonic
    ends: float  # monotonic
    extra: dict[str, Any] = field(default_factory=dict)  # what the API keeps about it
    cancelled_at: float | None = None  # monotonic
    ended: bool = False  # outcomes settled and billed

    def ended_by(self, now: float) -> bool:
        return self.ended or now >= self.ends

    def wall(self, moment: float) -> float:
        """A monotonic moment of this batch as wall-clock seconds."""
        return self.created + (moment - self.started)


class BatchBook:
    """Every batch the emulator holds, most recent last; settles and bills them."""

    def __init__(self, options: BatchOptions, stats: EmulatorStats, rng: random.Random) -> None:
        self.options = options
        self._stats = stats
        self._rng = rng
        self._batches: dict[str, Batch] = {}
        self._ids = itertools.count(1)

    def new_id(self, prefix: str) -> str:
        return f"{prefix}{next(self._ids):06d}{self._rng.getrandbits(48):012x}"

    def fate(self) -> ItemKind | None:
        """An injected fate for one item (drawn for every item, so runs repeat), else None."""
        roll = self._rng.random()
        if roll < self.options.expired:
            return "expired"
        if roll < self.options.expired + self.options.errored:
            return "errored"
        return None

    def create(self, prefix: str, items: Iterable[Item], extra: dict[str, Any]) -> Batch:
        now = time.monotonic()
        listed = list(items)
        span = self.options.time_s
        for item in listed:
            item.done_at = now + self._rng.random() * span
        batch = Batch(self.new_id(prefix), _reordered(listed, self._rng), time.time(), now, now + span, extra)
        self._batches[batch.id] = batch
        self._stats.batches_created += 1
        self._stats.batch_items += len(listed)
        return batch

    def get(self, batch_id: str) -> Batch | None:
        batch = self._batches.get(batch_id)
        if batch is not None:
            self.settle(batch)
        return batch

    def delete(self, batch_id: str) -> None:
        self._batches.pop(batch_id, None)

    def newest_first(self) -> list[Batch]:
        batches = list(reversed(self._batches.values()))
        for batch in batches:
            self.settle(batch)
        return batches

    def cancel(self, batch: Batch) -> None:
        """Cancel what has not finished yet; the batch ends at once (shown as cancelling once)."""
        if batch.ended_by(time.monotonic()) or batch.cancelled_at is not None:
            return
        now = time.monotonic()
        batch.cancelled_at = now
        for item in batch.items:
            if item.done_at > now:
                item.kind, item.body, item.usage = "canceled", None, None
        batch.ends = now
        self.settle(batch)

    def settle(self, batch: Batch) -> None:
        """Once a batch's time is up, its outcomes are final: bill the succeeded items."""
        if batch.ended or not batch.ended_by(time.monotonic()):
            return
        batch.ended = True
        for item in batch.items:
            if item.kind == "succeeded" and item.usage is not None:
                self._bill(item.model, item.usage)

    def _bill(self, model: str, usage: Usage) -> None:
        stats = self._stats
        stats.batch_items_billed += 1
        stats.batch_input_tokens += usage.input_tokens
        stats.batch_output_tokens += usage.output_tokens
        cost = cost_of(model, usage)
        if cost is not None:
            stats.batch_cost_usd += cost * BATCH_PRICE


def page(batches: list[Batch], limit: int, after: str | None, before: str | None) -> tuple[list[Batch], bool]:
    """One page of a newest-first list, after or before the given id (both APIs page so)."""
    ids = [b.id for b in batches]
    if before is not None and before in ids:
        newer = batches[: ids.index(before)]
        return newer[-limit:], len(newer) > limit
    if after is not None and after in ids:
        batches = batches[ids.index(after) + 1 :]
    return batches[:limit], len(batches) > limit


def page_limit(raw: str | None, default: int = 20) -> int:
    try:
        limit = int(raw) if raw is not None else default
    except ValueError:
        return -1
    return limit if 1 <= limit <= 1000 else -1


def _reordered(items: list[Item], rng: random.Random) -> list[Item]:
    """The items in a shuffled order that is never the input's (when there are two or more)."""
    order = items[:]
    rng.shuffle(order)
    if len(order) > 1 and all(a is b for a, b in zip(order, items, strict=True)):
        order = order[1:] + order[:1]
    return order
