"""Anthropic's Message Batches API (``/v1/messages/batches``), as the official SDK expects it.

Create (``POST``, requests inline as ``{custom_id, params}``), retrieve, list (newest
first, paged by ``after_id`` / ``before_id``), cancel, delete and results (JSONL at the
batch's ``results_url``, in an order other than the input's). ``processing_status`` is
``in_progress`` until the batch's time is up, ``canceling`` in the answer to a cancel,
then ``ended``; as at Anthropic, ``request_counts`` holds every request under
``processing`` until the batch ends. Each item's ``params`` are checked and answered as
an online ``/v1/messages`` call would be, and a bad one ends ``errored``, not the batch.
A batch holds at most 100,000 requests or 256 MB unless the emulator says otherwise.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from quorum.testing._anthropic_api import AnthropicApi
from quorum.testing._batches import DAY_S, Batch, BatchBook, Item, page, page_limit
from quorum.testing._http import Exchange
from quorum.testing._wire import WireApi

PREFIX = "/v1/messages/batches"
MAX_REQUESTS, MAX_MEGABYTES = 100_000, 256
_CUSTOM_ID = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")

ItemRunner = Callable[[WireApi, str, Any, Mapping[str, str]], Item]


class AnthropicBatches:
    def __init__(self, book: BatchBook, run_item: ItemRunner) -> None:
        self._book = book
        self._run_item = run_item
        self._api = AnthropicApi()

    async def handle(self, exchange: Exchange) -> None:
        if not self._api.authorized(exchange.headers):
            self._error(
                exchange, 401, "no API key was sent: send x-api-key (any value works with this emulator)"
            )
            return
        parts = exchange.path.removeprefix(PREFIX).strip("/").split("/")
        batch_id, action = parts[0], "/".join(parts[1:])
        method = exchange.method
        if not batch_id:
            if method == "POST":
                await self._create(exchange)
            elif method == "GET":
                self._list(exchange)
            else:
                self._error(exchange, 405, f"{method} is not allowed on {PREFIX}: use POST or GET")
            return
        batch = self._book.get(batch_id)
        if batch is None or "anthropic" not in batch.extra:
            self._error(exchange, 404, f"no message batch {batch_id!r}")
        elif (method, action) == ("GET", ""):
            self._json(exchange, 200, self._shape(batch, exchange))
        elif (method, action) == ("POST", "cancel"):
            self._book.cancel(batch)
            self._json(exchange, 200, self._shape(batch, exchange, canceling=batch.cancelled_at is not None))
        elif (method, action) == ("GET", "results"):
            self._results(exchange, batch)
        elif (method, action) == ("DELETE", ""):
            self._delete(exchange, batch)
        else:
            self._error(exchange, 404, f"no route {method} {exchange.path}")

    async def _create(self, exchange: Exchange) -> None:
        raw = await exchange.body()
        max_requests, max_bytes = self._book.options.size_limits(MAX_REQUESTS, MAX_MEGABYTES)
        if len(raw) > max_bytes:
            self._error(exchange, 413, f"the batch is {len(raw)} bytes, over the limit of {max_bytes} bytes")
            return
        try:
            body = json.loads(raw)
        except ValueError as exc:
            self._error(exchange, 400, f"the request body is not valid JSON: {exc}")
            return
        requests = body.get("requests") if isinstance(body, dict) else None
        problem = _check_requests(requests, max_requests)
        if problem is not None:
            self._error(exchange, 400, problem)
            return
        assert isinstance(requests, list)
        headers = exchange.headers
        items = [self._run_item(self._api, r["custom_id"], r["params"], headers) for r in requests]
        batch = self._book.create("msgbatch_", items, {"anthropic": True})
        self._json(exchange, 200, self._shape(batch, exchange))

    def _list(self, exchange: Exchange) -> None:
        limit = page_limit(exchange.query.get("limit"))
        if limit < 0:
            self._error(exchange, 400, "limit: must be a whole number from 1 to 1000")
            return
        mine = [b for b in self._book.newest_first() if "anthropic" in b.extra]
        shown, more = page(mine, limit, exchange.query.get("after_id"), exchange.query.get("before_id"))
        data = [self._shape(b, exchange) for b in shown]
        first = data[0]["id"] if data else None
        last = data[-1]["id"] if data else None
        self._json(exchange, 200, {"data": data, "has_more": more, "first_id": first, "last_id": last})

    def _results(self, exchange: Exchange, batch: Batch) -> None:
        if not batch.ended:
            self._error(exchange, 404, f"batch {batch.id} has not ended yet: its results are not ready")
            return
        lines = [json.dumps({"custom_id": item.custom_id, "result": _result(item)}) for item in batch.items]
        body = ("\n".join(lines) + "\n").encode()
        exchange.respond(
            200, [("content-type", "application/binary"), ("request-id", "req_" + batch.id)], body
        )

    def _delete(self, exchange: Exchange, batch: Batch) -> None:
        if not batch.ended:
            self._error(
                exchange, 400, f"batch {batch.id} is still being processed: cancel it before deleting it"
            )
            return
        self._book.delete(batch.id)
        self._json(exchange, 200, {"id": batch.id, "type": "message_batch_deleted"})

    def _shape(self, batch: Batch, exchange: Exchange, *, canceling: bool = False) -> dict[str, Any]:
        ended = batch.ended and not canceling
        counts = dict.fromkeys(("processing", "succeeded", "errored", "canceled", "expired"), 0)
        if ended:
            for item in batch.items:
                counts[item.kind] += 1
        else:
            counts["processing"] = len(batch.items)
        results_url = f"{exchange.base_url}{PREFIX}/{batch.id}/results" if ended else None
        return {
            "id": batch.id,
            "type": "message_batch",
            "processing_status": "ended" if ended else "canceling" if canceling else "in_progress",
            "request_counts": counts,
            "ended_at": _iso(batch.wall(batch.ends)) if ended else None,
            "created_at": _iso(batch.created),
            "expires_at": _iso(batch.created + DAY_S),
            "archived_at": None,
            "cancel_initiated_at": _iso(batch.wall(batch.cancelled_at))
            if batch.cancelled_at is not None
            else None,
            "results_url": results_url,
        }

    def _json(self, exchange: Exchange, status: int, payload: Mapping[str, Any]) -> None:
        headers = [("content-type", "application/json"), ("request-id", f"req_{time.monotonic_ns():x}")]
        exchange.respond(status, headers, json.dumps(payload).encode())

    def _error(self, exchange: Exchange, status: int, message: str) -> None:
        exchange.respond(status, [("content-type", "application/json")], self._api.error(status, message))


def _check_requests(requests: Any, max_requests: int) -> str | None:
    """What is wrong with a create's ``requests``, in the API's words, or None."""
    if not isinstance(requests, list) or not requests:
        return "requests: a list of at least one {custom_id, params} is required"
    if len(requests) > max_requests:
        return f"requests: {len(requests)} requests are over the limit of {max_requests} per batch"
    seen: set[str] = set()
    for index, request in enumerate(requests):
        if not isinstance(request, dict) or not isinstance(request.get("params"), dict):
            return f"requests.{index}: expected an object with custom_id and params"
        custom_id = request.get("custom_id")
        if not isinstance(custom_id, str) or not _CUSTOM_ID.match(custom_id):
            return f"requests.{index}.custom_id: 1 to 64 letters, digits, '-' or '_', got {custom_id!r}"
        if custom_id in seen:
            return f"requests.{index}.custom_id: {custom_id!r} is used twice; each must be unique in a batch"
        seen.add(custom_id)
        if request["params"].get("stream"):
            return f"requests.{index}.params.stream: batch requests cannot be streamed"
    return None


def _result(item: Item) -> dict[str, Any]:
    if item.kind == "succeeded":
        return {"type": "succeeded", "message": item.body}
    if item.kind == "errored":
        return {"type": "errored", "error": item.body}
    return {"type": item.kind}


def _iso(wall: float) -> str:
    return datetime.fromtimestamp(wall, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
