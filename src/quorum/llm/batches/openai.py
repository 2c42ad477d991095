"""OpenAI's Batch API through ``client.files`` and ``client.batches``.

The requests are uploaded as one JSONL file of ``{custom_id, method, url, body}`` lines,
whose ``body`` is what an online Chat Completions call sends (built by ``OpenAIProvider``);
the batch is created with ``completion_window="24h"`` and carries the job's id and the
intent's tag in its metadata, which is how a batch whose id the journal never got is found
again. Results are read from the output file (answers) and the error file (failures,
expiries), joined by ``custom_id``.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Sequence
from typing import Any, Literal

from openai.types import Batch
from openai.types.chat import ChatCompletion

from quorum.errors import BadRequest
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
from quorum.llm.openai import OpenAIProvider
from quorum.llm.types import Reply

LIMITS = BatchLimits(max_requests=50_000, max_bytes=200 * 1024 * 1024)
ENDPOINT: Literal["/v1/chat/completions"] = "/v1/chat/completions"
JOB_KEY, TAG_KEY = "quorum_job", "quorum_intent"
CLOCK_SKEW_S = 300.0
_ENDED = frozenset({"completed", "failed", "expired", "cancelled"})
_LIST_PAGE = 100


class OpenAIBatches(OnlineBacked[OpenAIProvider]):
    """The Batch API for one model; options as for ``OpenAIProvider``."""

    name = "openai"

    def __init__(self, model: str | None = None, *, limits: BatchLimits = LIMITS, **options: Any) -> None:
        online = OpenAIProvider(model, **options) if model else OpenAIProvider(**options)
        super().__init__(online, limits)
        self._client = self._online._client

    def _line(self, item: BatchItem) -> bytes:
        body = self._online._params(item.request)
        entry = {"custom_id": wire_id(item.custom_id), "method": "POST", "url": ENDPOINT, "body": body}
        return json.dumps(entry).encode() + b"\n"

    def item_size(self, item: BatchItem) -> int:
        return len(self._line(item))

    async def create(self, intent: Intent, items: Sequence[BatchItem]) -> BatchStatus:
        data = b"".join(self._line(item) for item in items)
        upload = self._client.files.create(file=(f"{intent.tag}.jsonl", data), purpose="batch")
        file = await self._boundary.guard(upload)
        metadata = {JOB_KEY: intent.job_id[:512], TAG_KEY: intent.tag[:512]}
        call = self._client.batches.create(
            completion_window="24h", endpoint=ENDPOINT, input_file_id=file.id, metadata=metadata
        )
        return _status(await self._boundary.guard(call))

    async def retrieve(self, batch_id: str) -> BatchStatus:
        return _status(await self._boundary.guard(self._client.batches.retrieve(batch_id)))

    async def cancel(self, batch_id: str) -> BatchStatus:
        return _status(await self._boundary.guard(self._client.batches.cancel(batch_id)))

    async def find(self, intent: Intent, claimed: frozenset[str] = frozenset()) -> BatchStatus | None:
        return await self._boundary.guard(self._find(intent, claimed))  # the listing pages through the SDK

    async def _find(self, intent: Intent, claimed: frozenset[str]) -> BatchStatus | None:
        """The batch whose metadata names the intent (newest first, back to the intent)."""
        since = intent.written_at - CLOCK_SKEW_S
        async for batch in self._client.batches.list(limit=_LIST_PAGE):
            if batch.created_at < since:
                break
            meta = batch.metadata or {}
            ours = meta.get(TAG_KEY) == intent.tag and meta.get(JOB_KEY) == intent.job_id[:512]
            if ours and batch.id not in claimed:
                return _status(batch)
        return None

    async def results(self, batch_id: str, items: Sequence[BatchItem]) -> AsyncIterator[ItemResult]:
        batch = await self._boundary.guard(self._client.batches.retrieve(batch_id))
        join = ResultJoin(items)
        if batch.status == "failed":
            for each in items:
                join.seen.add(each.custom_id)
                yield ItemResult(each.custom_id, "errored", error=self._refused(batch))
        for file_id in (batch.output_file_id, batch.error_file_id):
            for line in await self._lines(file_id):
                item = join.claim(str(line.get("custom_id")))
                if item is not None:
                    yield self._result(item, line)
        for missing in join.unanswered(self.name):
            yield missing

    async def _lines(self, file_id: str | None) -> list[dict[str, Any]]:
        if not file_id:
            return []
        content = await self._boundary.guard(self._client.files.content(file_id))
        return [json.loads(line) for line in content.text.splitlines() if line.strip()]

    def _refused(self, batch: Batch) -> BadRequest:
        reasons = [e.message or e.code or "" for e in (batch.errors.data or [])] if batch.errors else []
        why = "; ".join(r for r in reasons if r)[:300] or "no reason given"
        return BadRequest(f"openai: batch {batch.id} failed validation: {why}", provider=self.name)

    def _result(self, item: BatchItem, line: dict[str, Any]) -> ItemResult:
        error = line.get("error")
        if error:
            code, message = str(error.get("code") or ""), str(error.get("message") or "")
            if code == "batch_expired":
                return expired(item.custom_id, self.name, "expired before it ran (the 24 hours ended)")
            if code == "batch_cancelled":
                return canceled(item.custom_id, self.name)
            return ItemResult(item.custom_id, "errored", error=item_error(self.name, None, code, message))
        response = line.get("response") or {}
        status, body = int(response.get("status_code") or 0), response.get("body") or {}
        if status != 200:
            inner = body.get("error") or {}
            failure = item_error(self.name, status, inner.get("type"), str(inner.get("message") or body))
            return ItemResult(item.custom_id, "errored", error=failure)
        return answered(item.custom_id, lambda: self._read(item, body))

    def _read(self, item: BatchItem, body: dict[str, Any]) -> Reply:
        answer = self._online._answer(ChatCompletion.model_validate(body))
        return self._online._reply(item.request, answer, {}, 0.0)


def _status(batch: Batch) -> BatchStatus:
    c = batch.request_counts
    total, done, failed = (c.total, c.completed, c.failed) if c is not None else (0, 0, 0)
    processing = 0 if batch.status in _ENDED else max(0, total - done - failed)
    counts = BatchCounts(total=total, processing=processing, succeeded=done, errored=failed)
    return BatchStatus(batch.id, batch.status, batch.status in _ENDED, counts, float(batch.created_at))
