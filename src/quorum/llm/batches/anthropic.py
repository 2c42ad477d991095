"""Anthropic's Message Batches API through ``client.messages.batches``.

Requests go inline as ``{custom_id, params}``, with the same ``params`` an online call
sends (built by ``AnthropicProvider``), and results come back as JSONL in no particular
order. A batch carries no metadata, so a batch whose id the journal never got is found
again by listing recent batches: one created after the intent was written, holding as
many requests as the intent, and not already claimed by another intent.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Sequence
from typing import Any

from anthropic.types.messages import MessageBatch, MessageBatchIndividualResponse

from quorum.llm.anthropic import AnthropicProvider
from quorum.llm.batches.base import (
    BatchCounts,
    BatchItem,
    BatchLimits,
    BatchStatus,
    Intent,
    ItemResult,
    OnlineBacked,
    ResultJoin,
    answered,
    canceled,
    expired,
    wire_id,
)
from quorum.llm.http_errors import item_error

LIMITS = BatchLimits(max_requests=100_000, max_bytes=256 * 1024 * 1024)
CLOCK_SKEW_S = 300.0  # how much earlier than the intent a found batch may claim to be created
_LIST_PAGE = 100


class AnthropicBatches(OnlineBacked[AnthropicProvider]):
    """Message Batches for one model; options as for ``AnthropicProvider``."""

    name = "anthropic"

    def __init__(self, model: str | None = None, *, limits: BatchLimits = LIMITS, **options: Any) -> None:
        online = AnthropicProvider(model, **options) if model else AnthropicProvider(**options)
        super().__init__(online, limits)
        self._client = self._online._client

    def _entry(self, item: BatchItem) -> dict[str, Any]:
        return {"custom_id": wire_id(item.custom_id), "params": self._online._params(item.request)}

    def item_size(self, item: BatchItem) -> int:
        return len(json.dumps(self._entry(item)).encode())

    async def create(self, intent: Intent, items: Sequence[BatchItem]) -> BatchStatus:
        requests: Any = [self._entry(item) for item in items]
        batch = await self._boundary.guard(self._client.messages.batches.create(requests=requests))
        return _status(batch)

    async def retrieve(self, batch_id: str) -> BatchStatus:
        return _status(await self._boundary.guard(self._client.messages.batches.retrieve(batch_id)))

    async def cancel(self, batch_id: str) -> BatchStatus:
        return _status(await self._boundary.guard(self._client.messages.batches.cancel(batch_id)))

    async def find(self, intent: Intent, claimed: frozenset[str] = frozenset()) -> BatchStatus | None:
        return await self._boundary.guard(self._find(intent, claimed))  # the listing pages through the SDK

    async def _find(self, intent: Intent, claimed: frozenset[str]) -> BatchStatus | None:
        """The oldest unclaimed batch of the intent's size created since the intent."""
        found: BatchStatus | None = None
        since = intent.written_at - CLOCK_SKEW_S
        async for batch in self._client.messages.batches.list(limit=_LIST_PAGE):
            status = _status(batch)
            if status.created_at < since:
                break  # newest first: everything further is older than the intent
            if status.counts.total == len(intent.custom_ids) and status.id not in claimed:
                found = status  # keep going: the oldest match was created first
        return found

    async def results(self, batch_id: str, items: Sequence[BatchItem]) -> AsyncIterator[ItemResult]:
        join = ResultJoin(items)
        lines = await self._boundary.guard(self._client.messages.batches.results(batch_id))
        async for line in self._boundary.each(lines):  # the JSONL streams through the SDK
            item = join.claim(line.custom_id)
            if item is not None:
                yield self._result(item, line)
        for missing in join.unanswered(self.name):
            yield missing

    def _result(self, item: BatchItem, line: MessageBatchIndividualResponse) -> ItemResult:
        result = line.result
        if result.type == "succeeded":
            message = result.message
            return answered(item.custom_id, lambda: self._online._reply(item.request, message, {}, 0.0))
        if result.type == "errored":
            inner = result.error.error
            error = item_error(self.name, None, inner.type, inner.message)
            return ItemResult(item.custom_id, "errored", error=error)
        if result.type == "expired":
            return expired(item.custom_id, self.name, "expired before it ran (the batch's 24 hours ended)")
        return canceled(item.custom_id, self.name)


def _status(batch: MessageBatch) -> BatchStatus:
    c = batch.request_counts
    total = c.processing + c.succeeded + c.errored + c.expired + c.canceled
    counts = BatchCounts(total, c.processing, c.succeeded, c.errored, c.expired, c.canceled)
    ended = batch.processing_status == "ended"
    return BatchStatus(batch.id, batch.processing_status, ended, counts, batch.created_at.timestamp())
