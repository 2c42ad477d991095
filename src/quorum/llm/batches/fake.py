"""An in-memory batch API for logic tests: a ``FakeProvider`` answers each item, a clock
decides when a batch ends, and shares of items error or expire, so the batch driver's
resubmission, kills and resumes can be tested in no time. Wire tests use the emulator."""

from __future__ import annotations

import itertools
import json
import random
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field

from quorum import errors
from quorum.llm.batches.base import (
    BatchCounts,
    BatchItem,
    BatchLimits,
    BatchStatus,
    Intent,
    ItemResult,
    batch_priced,
    canceled,
    expired,
)
from quorum.llm.fake import FakeProvider

LIMITS = BatchLimits(max_requests=100_000, max_bytes=256 * 1024 * 1024)


@dataclass
class _Batch:
    status: BatchStatus
    tag: str
    items: list[BatchItem]
    ends_at: float
    cancelled: bool = False
    outcomes: dict[str, str] = field(default_factory=dict)  # custom_id -> kind


class FakeBatches:
    """``time_to_end`` seconds (by ``now``) after create a batch has ended; each item
    errors with ``error_share`` and expires with ``expire_share`` (seeded)."""

    name = "fake"

    def __init__(
        self,
        provider: FakeProvider | None = None,
        *,
        time_to_end: float = 120.0,
        error_share: float = 0.0,
        expire_share: float = 0.0,
        limits: BatchLimits = LIMITS,
        now: Callable[[], float] = time.time,
        seed: int = 0,
    ) -> None:
        self._provider = provider or FakeProvider()
        self.model = self._provider.model
        self.limits = limits
        self.time_to_end = time_to_end
        self.error_share, self.expire_share = error_share, expire_share
        self._now = now
        self._rng = random.Random(seed)
        self._ids = itertools.count(1)
        self.batches: dict[str, _Batch] = {}
        self.items_billed = 0
        self.submitted: list[str] = []  # every custom_id ever submitted, in order

    @property
    def batches_created(self) -> int:
        return len(self.batches)

    def item_size(self, item: BatchItem) -> int:
        return len(json.dumps({"custom_id": item.custom_id, "text": item.request.text}).encode())

    async def create(self, intent: Intent, items: Sequence[BatchItem]) -> BatchStatus:
        batch_id = f"fakebatch_{next(self._ids)}"
        counts = BatchCounts(total=len(items), processing=len(items))
        status = BatchStatus(batch_id, "in_progress", False, counts, self._now())
        self.batches[batch_id] = _Batch(status, intent.tag, list(items), self._now() + self.time_to_end)
        self.submitted += [item.custom_id for item in items]
        return await self.retrieve(batch_id)

    async def retrieve(self, batch_id: str) -> BatchStatus:
        batch = self._batch(batch_id)
        if not batch.status.ended and (batch.cancelled or self._now() >= batch.ends_at):
            self._end(batch)
        return batch.status

    async def cancel(self, batch_id: str) -> BatchStatus:
        batch = self._batch(batch_id)
        batch.cancelled = True
        return await self.retrieve(batch_id)

    async def find(self, intent: Intent, claimed: frozenset[str] = frozenset()) -> BatchStatus | None:
        for batch in self.batches.values():
            if batch.tag == intent.tag and batch.status.id not in claimed:
                return batch.status
        return None

    async def results(self, batch_id: str, items: Sequence[BatchItem]) -> AsyncIterator[ItemResult]:
        batch = self._batch(batch_id)
        if not batch.status.ended:
            raise errors.BadRequest(f"fake: batch {batch_id} has not ended", provider=self.name)
        for item in reversed(batch.items):  # providers do not keep input order
            yield await self._result(item, batch.outcomes[item.custom_id])

    async def aclose(self) -> None:
        return None

    def _batch(self, batch_id: str) -> _Batch:
        if batch_id not in self.batches:
            raise errors.NotFound(f"fake: no batch {batch_id}", status=404, provider=self.name)
        return self.batches[batch_id]

    def _end(self, batch: _Batch) -> None:
        for item in batch.items:
            draw = self._rng.random()
            if batch.cancelled:
                kind = "canceled"
            elif draw < self.error_share:
                kind = "errored"
            elif draw < self.error_share + self.expire_share:
                kind = "expired"
            else:
                kind = "succeeded"
            batch.outcomes[item.custom_id] = kind
        kinds = list(batch.outcomes.values())
        counts = BatchCounts(
            total=len(kinds),
            succeeded=kinds.count("succeeded"),
            errored=kinds.count("errored"),
            expired=kinds.count("expired"),
            canceled=kinds.count("canceled"),
        )
        self.items_billed += counts.succeeded
        old = batch.status
        batch.status = BatchStatus(old.id, "ended", True, counts, old.created_at)

    async def _result(self, item: BatchItem, kind: str) -> ItemResult:
        if kind == "errored":
            error = errors.Overloaded(f"fake: batch item {item.custom_id!r} errored", provider=self.name)
            return ItemResult(item.custom_id, "errored", error=error)
        if kind == "expired":
            return expired(item.custom_id, self.name, "expired before it ran")
        if kind == "canceled":
            return canceled(item.custom_id, self.name)
        try:
            reply = await self._provider.complete(item.request)
        except errors.QuorumError as exc:
            return ItemResult(item.custom_id, "errored", error=exc)
        return ItemResult(item.custom_id, "succeeded", reply=batch_priced(reply))
