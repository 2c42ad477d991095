"""OpenAI's Files (``/v1/files``) and Batch (``/v1/batches``) APIs, as the official SDK expects them.

Files: upload (multipart ``file`` and ``purpose``), retrieve, list, content, delete.
Batches: create from an uploaded JSONL file of ``{custom_id, method, url, body}`` lines
(``endpoint="/v1/chat/completions"``, ``completion_window="24h"``, up to 16 ``metadata``
pairs), retrieve, list (newest first, paged by ``after``), cancel. A batch is
``validating`` in the answer to its create, then ``in_progress``, ``finalizing`` in the
last tenth of its time, and ``completed`` (``expired`` when some of its items expired,
``cancelled`` after a cancel, which answers ``cancelling``). A file that breaks the rules
(a line that is not JSON, a duplicate ``custom_id``, another method, endpoint or model
than the batch's, more than 50,000 requests or 200 MB) makes the batch ``failed`` with
``errors`` naming the line. Succeeded items go to the output file; errored, expired and
cancelled ones to the error file, all in an order other than the input's.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from quorum.testing._batches import DAY_S, Batch, BatchBook, Item, page, page_limit
from quorum.testing._http import Exchange
from quorum.testing._openai_api import OpenAIApi
from quorum.testing._wire import WireApi

ENDPOINTS = ("/v1/chat/completions",)
MAX_REQUESTS, MAX_MEGABYTES = 50_000, 200
MAX_METADATA = 16
ItemRunner = Callable[[WireApi, str, Any, Mapping[str, str]], Item]
_ERROR_CODES = {"expired": "batch_expired", "canceled": "batch_cancelled"}
_ERROR_TEXT = {
    "expired": "This request could not be executed before the completion window expired.",
    "canceled": "This request was not executed: the batch was cancelled first.",
}


@dataclass(frozen=True, slots=True)
class File:
    id: str
    data: bytes
    filename: str
    purpose: str
    created: int

    def shape(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "file",
            "bytes": len(self.data),
            "created_at": self.created,
            "filename": self.filename,
            "purpose": self.purpose,
            "status": "processed",
            "expires_at": None,
            "status_details": None,
        }


class OpenAIBatches:
    def __init__(self, book: BatchBook, run_item: ItemRunner) -> None:
        self._book = book
        self._run_item = run_item
        self._api = OpenAIApi()
        self._files: dict[str, File] = {}

    async def handle(self, exchange: Exchange) -> None:
        if not self._api.authorized(exchange.headers):
            self._error(
                exchange, 401, "no API key was sent: send Authorization: Bearer (any value works here)"
            )
            return
        parts = exchange.path.strip("/").split("/")[1:]  # after "v1"
        route = (exchange.method, parts[0], len(parts), parts[2] if len(parts) > 2 else "")
        ident = parts[1] if len(parts) > 1 else ""
        match route:
            case ("POST", "files", 1, _):
                await self._upload(exchange)
            case ("GET", "files", 1, _):
                self._json(
                    exchange, 200, _listing([f.shape() for f in reversed(self._files.values())], False)
                )
            case ("GET", "files", 2, _):
                self._with_file(exchange, ident, lambda f: self._json(exchange, 200, f.shape()))
            case ("GET", "files", 3, "content"):
                self._with_file(exchange, ident, lambda f: self._content(exchange, f))
            case ("DELETE", "files", 2, _):
                self._with_file(exchange, ident, lambda f: self._delete_file(exchange, f))
            case ("POST", "batches", 1, _):
                await self._create(exchange)
            case ("GET", "batches", 1, _):
                self._list(exchange)
            case ("GET", "batches", 2, _):
                self._with_batch(exchange, ident, lambda b: self._json(exchange, 200, self._shape(b)))
            case ("POST", "batches", 3, "cancel"):
                self._with_batch(exchange, ident, lambda b: self._cancel(exchange, b))
            case _:
                self._error(exchange, 404, f"no route {exchange.method} {exchange.path}")

    # --- files ------------------------------------------------------------------------

    async def _upload(self, exchange: Exchange) -> None:
        form = await exchange.form()
        upload, purpose = form.get("file"), form.get("purpose")
        if not isinstance(upload, web.FileField):
            self._error(exchange, 400, "file: a multipart file field is required")
            return
        if not isinstance(purpose, str) or not purpose:
            self._error(exchange, 400, "purpose: required (use 'batch' for batch input)")
            return
        data = upload.file.read()
        _, max_bytes = self._book.options.size_limits(MAX_REQUESTS, MAX_MEGABYTES)
        if purpose == "batch" and len(data) > max_bytes:
            self._error(
                exchange, 400, f"the file is {len(data)} bytes, over the batch limit of {max_bytes} bytes"
            )
            return
        self._json(exchange, 200, self._store(data, upload.filename or "upload.jsonl", purpose).shape())

    def _store(self, data: bytes, filename: str, purpose: str) -> File:
        file = File(self._book.new_id("file-"), data, filename, purpose, int(time.time()))
        self._files[file.id] = file
        return file

    def _content(self, exchange: Exchange, file: File) -> None:
        exchange.respond(200, [("content-type", "application/octet-stream")], file.data)

    def _delete_file(self, exchange: Exchange, file: File) -> None:
        del self._files[file.id]
        self._json(exchange, 200, {"id": file.id, "object": "file", "deleted": True})

    def _with_file(self, exchange: Exchange, file_id: str, then: Callable[[File], None]) -> None:
        file = self._files.get(file_id)
        if file is None:
            self._error(exchange, 404, f"No such File object: {file_id}")
        else:
            then(file)

    # --- batches ----------------------------------------------------------------------

    async def _create(self, exchange: Exchange) -> None:
        try:
            body = json.loads(await exchange.body())
        except ValueError as exc:
            self._error(exchange, 400, f"the request body is not valid JSON: {exc}")
            return
        problem = _check_create(body, self._files)
        if problem is not None:
            self._error(exchange, 400 if "No such File" not in problem else 404, problem)
            return
        endpoint, file = body["endpoint"], self._files[body["input_file_id"]]
        extra: dict[str, Any] = {"openai": True, "body": body, "errors": None}
        max_requests, _ = self._book.options.size_limits(MAX_REQUESTS, MAX_MEGABYTES)
        lines, errors = _read_lines(file.data, endpoint, max_requests)
        items: list[Item] = []
        if errors:
            extra["errors"] = {"object": "list", "data": errors}
        else:
            items = [
                self._run_item(self._api, line["custom_id"], line["body"], exchange.headers) for line in lines
            ]
        batch = self._book.create("batch_", items, extra)
        self._json(exchange, 200, self._shape(batch, validating=True))

    def _list(self, exchange: Exchange) -> None:
        limit = page_limit(exchange.query.get("limit"))
        if limit < 0:
            self._error(exchange, 400, "limit: must be a whole number from 1 to 1000")
            return
        mine = [b for b in self._book.newest_first() if "openai" in b.extra]
        shown, more = page(mine, limit, exchange.query.get("after"), None)
        self._json(exchange, 200, _listing([self._shape(b) for b in shown], more))

    def _cancel(self, exchange: Exchange, batch: Batch) -> None:
        if batch.extra["errors"] is not None or batch.ended:
            self._error(exchange, 409, f"Cannot cancel a batch with status '{self._status(batch)}'.")
            return
        self._book.cancel(batch)
        self._json(exchange, 200, self._shape(batch, cancelling=True))

    def _with_batch(self, exchange: Exchange, batch_id: str, then: Callable[[Batch], None]) -> None:
        batch = self._book.get(batch_id)
        if batch is None or "openai" not in batch.extra:
            self._error(exchange, 404, f"No batch found with id '{batch_id}'.")
        else:
            then(batch)

    def _status(self, batch: Batch, *, validating: bool = False, cancelling: bool = False) -> str:
        if batch.extra["errors"] is not None:
            return "failed"
        if validating:
            return "validating"
        if cancelling:
            return "cancelling"
        if batch.ended:
            if batch.cancelled_at is not None:
                return "cancelled"
            return "expired" if any(i.kind == "expired" for i in batch.items) else "completed"
        finalizing = time.monotonic() >= batch.ends - (batch.ends - batch.started) / 10
        return "finalizing" if finalizing else "in_progress"

    def _shape(self, batch: Batch, *, validating: bool = False, cancelling: bool = False) -> dict[str, Any]:
        status = self._status(batch, validating=validating, cancelling=cancelling)
        body = batch.extra["body"]
        created = int(batch.created)
        ended_at = int(batch.wall(batch.ends)) if batch.ended else None
        output, errors = self._result_files(batch) if batch.ended and status != "failed" else (None, None)
        return {
            "id": batch.id,
            "object": "batch",
            "endpoint": body["endpoint"],
            "errors": batch.extra["errors"],
            "input_file_id": body["input_file_id"],
            "completion_window": body["completion_window"],
            "status": status,
            "output_file_id": output,
            "error_file_id": errors,
            "created_at": created,
            "in_progress_at": created if status not in ("validating", "failed") else None,
            "expires_at": created + DAY_S,
            "finalizing_at": ended_at,
            "completed_at": ended_at if status == "completed" else None,
            "failed_at": created if status == "failed" else None,
            "expired_at": ended_at if status == "expired" else None,
            "cancelling_at": int(batch.wall(batch.cancelled_at)) if batch.cancelled_at is not None else None,
            "cancelled_at": ended_at if status == "cancelled" else None,
            "request_counts": _counts(batch),
            "metadata": body.get("metadata"),
        }

    def _result_files(self, batch: Batch) -> tuple[str | None, str | None]:
        """The output and error files, written once when the batch has ended."""
        if "files" not in batch.extra:
            done = [_line(batch, i) for i in batch.items if i.kind == "succeeded"]
            failed = [_line(batch, i) for i in batch.items if i.kind != "succeeded"]
            batch.extra["files"] = tuple(
                self._store(_jsonl(lines), f"{batch.id}_{name}.jsonl", f"batch_{name}").id if lines else None
                for name, lines in (("output", done), ("error", failed))
            )
        output, errors = batch.extra["files"]
        return output, errors

    def _json(self, exchange: Exchange, status: int, payload: Mapping[str, Any]) -> None:
        headers = [("content-type", "application/json"), ("x-request-id", f"req_{time.monotonic_ns():x}")]
        exchange.respond(status, headers, json.dumps(payload).encode())

    def _error(self, exchange: Exchange, status: int, message: str) -> None:
        exchange.respond(status, [("content-type", "application/json")], self._api.error(status, message))


def _check_create(body: Any, files: Mapping[str, File]) -> str | None:
    """What is wrong with a batch create, in the API's words, or None."""
    if not isinstance(body, dict):
        return "the request body must be a JSON object"
    if body.get("endpoint") not in ENDPOINTS:
        return f"endpoint: {body.get('endpoint')!r} is not served here; use one of {', '.join(ENDPOINTS)}"
    if body.get("completion_window") != "24h":
        return f"completion_window: only '24h' is supported, got {body.get('completion_window')!r}"
    metadata = body.get("metadata")
    if metadata is not None and (not isinstance(metadata, dict) or len(metadata) > MAX_METADATA):
        return f"metadata: at most {MAX_METADATA} string pairs"
    if isinstance(metadata, dict) and any(
        not isinstance(v, str) or len(k) > 64 or len(v) > 512 for k, v in metadata.items()
    ):
        return "metadata: keys are at most 64 characters, values strings of at most 512"
    file = files.get(str(body.get("input_file_id")))
    if file is None:
        return f"No such File object: {body.get('input_file_id')}"
    if file.purpose != "batch":
        return f"input_file_id: the file's purpose is {file.purpose!r}; upload it with purpose 'batch'"
    return None


def _read_lines(
    data: bytes, endpoint: str, max_requests: int
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The file's requests, or the validation errors that fail the batch (with line numbers)."""
    lines: list[dict[str, Any]] = []
    errors: list[dict[str, Any]] = []
    seen: set[str] = set()
    model: str | None = None
    for number, raw in enumerate(data.decode("utf-8", "replace").splitlines(), 1):
        if not raw.strip():
            continue
        problem, line = _check_line(raw, endpoint, seen)
        if problem is None and line is not None:
            this_model = line["body"].get("model")
            model = model or this_model
            if this_model != model:
                problem = (
                    "mismatched_model",
                    f"every request of a batch must use one model: {this_model!r} is not {model!r}",
                )
        if problem is not None:
            errors.append({"code": problem[0], "message": problem[1], "param": None, "line": number})
        elif line is not None:
            lines.append(line)
    if not lines and not errors:
        errors.append(
            {"code": "empty_file", "message": "The input file has no requests.", "param": None, "line": None}
        )
    if len(lines) > max_requests:
        message = f"The batch has {len(lines)} requests, over the limit of {max_requests}."
        errors.append({"code": "too_many_requests", "message": message, "param": None, "line": None})
    return lines, errors


def _check_line(
    raw: str, endpoint: str, seen: set[str]
) -> tuple[tuple[str, str] | None, dict[str, Any] | None]:
    try:
        line = json.loads(raw)
    except ValueError:
        return ("invalid_json_line", "This line is not valid JSON."), None
    if not isinstance(line, dict) or not isinstance(line.get("body"), dict):
        return ("invalid_request", "Each line needs custom_id, method, url and a body object."), None
    custom_id = line.get("custom_id")
    if not isinstance(custom_id, str) or not custom_id:
        return ("missing_required_parameter", "custom_id: required, a non-empty string."), None
    if custom_id in seen:
        return (
            "duplicate_custom_id",
            f"The custom_id {custom_id!r} is used twice; each must be unique.",
        ), None
    seen.add(custom_id)
    if line.get("method") != "POST":
        return ("invalid_method", f"method: only POST is supported, got {line.get('method')!r}."), None
    if line.get("url") != endpoint:
        return (
            "invalid_url",
            f"url: {line.get('url')!r} does not match the batch's endpoint {endpoint}.",
        ), None
    return None, line


def _counts(batch: Batch) -> dict[str, int]:
    now = time.monotonic()
    done = [i for i in batch.items if batch.ended or i.done_at <= now]
    completed = sum(i.kind == "succeeded" for i in done)
    failed = sum(i.kind == "errored" for i in done)
    return {"total": len(batch.items), "completed": completed, "failed": failed}


def _line(batch: Batch, item: Item) -> dict[str, Any]:
    ident = f"batch_req_{batch.id.removeprefix('batch_')}_{item.custom_id}"
    if item.kind in _ERROR_CODES:
        error = {"code": _ERROR_CODES[item.kind], "message": _ERROR_TEXT[item.kind]}
        return {"id": ident, "custom_id": item.custom_id, "response": None, "error": error}
    response = {"status_code": item.status, "request_id": "req_" + ident, "body": item.body}
    return {"id": ident, "custom_id": item.custom_id, "response": response, "error": None}


def _listing(data: list[dict[str, Any]], more: bool) -> dict[str, Any]:
    first = data[0]["id"] if data else None
    last = data[-1]["id"] if data else None
    return {"object": "list", "data": data, "first_id": first, "last_id": last, "has_more": more}


def _jsonl(lines: list[dict[str, Any]]) -> bytes:
    return ("\n".join(json.dumps(line) for line in lines) + "\n").encode()
