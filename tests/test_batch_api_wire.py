"""The batch adapters through the official SDKs, against an in-memory batch server.

The server speaks the wire format of Anthropic's ``/v1/messages/batches`` and OpenAI's
``/v1/files`` + ``/v1/batches`` (as the SDKs' types describe them) behind the SDKs' own
HTTP clients, so what is checked is what the SDKs send and parse: request params built
by the online adapters, results joined by custom_id in another order, errors and expiries
mapped to quorum's, metadata for finding an orphan again.
"""

from __future__ import annotations

import json
import os
import random
import re
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import anthropic
import httpx2
import openai
import pytest

from quorum import errors
from quorum.engine.batch_ledger import BatchLedger
from quorum.engine.batches import BatchRunner
from quorum.llm.batches.anthropic import AnthropicBatches
from quorum.llm.batches.base import BatchItem, Intent
from quorum.llm.batches.openai import OpenAIBatches
from quorum.llm.pricing import cost_of
from quorum.llm.types import Request, Usage
from quorum.testing import VirtualClock

SCHEMA = {"type": "object", "properties": {"ok": {"type": "boolean"}}, "required": ["ok"]}


class BatchServer:
    """Both providers' batch endpoints, in memory. A batch ends after ``polls`` retrieves;
    an item whose prompt says "fail" errors (overloaded), "expire" expires, "bad" is a 400."""

    def __init__(self, polls: int = 2, base: str = "https://api.anthropic.com") -> None:
        self.polls = polls
        self.base = base
        self.batches: dict[str, dict[str, Any]] = {}
        self.files: dict[str, bytes] = {}
        self.created = 0
        self.requests: list[tuple[str, str]] = []

    def transport(self) -> httpx2.MockTransport:
        return httpx2.MockTransport(self.handle)

    def handle(self, request: httpx2.Request) -> httpx2.Response:
        path, method = request.url.path, request.method
        self.requests.append((method, path))
        for pattern, handler in self.routes():
            match = re.fullmatch(pattern, f"{method} {path}")
            if match:
                return handler(request, *match.groups())
        return httpx2.Response(404, json={"error": {"type": "not_found_error", "message": path}})

    def routes(self) -> list[tuple[str, Any]]:
        return [
            (r"POST /v1/messages/batches", self.anthropic_create),
            (r"GET /v1/messages/batches", self.anthropic_list),
            (r"GET /v1/messages/batches/([\w-]+)", self.anthropic_retrieve),
            (r"POST /v1/messages/batches/([\w-]+)/cancel", self.anthropic_cancel),
            (r"GET /v1/messages/batches/([\w-]+)/results", self.anthropic_results),
            (r"POST /v1/files", self.openai_upload),
            (r"GET /v1/files/([\w-]+)/content", self.openai_content),
            (r"POST /v1/batches", self.openai_create),
            (r"GET /v1/batches", self.openai_list),
            (r"GET /v1/batches/([\w-]+)", self.openai_retrieve),
            (r"POST /v1/batches/([\w-]+)/cancel", self.openai_cancel),
        ]

    # --- shared ------------------------------------------------------------------------

    def _new(self, prefix: str, entries: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
        self.created += 1
        batch_id = f"{prefix}_{self.created}"
        batch = {
            "id": batch_id,
            "entries": entries,
            "polls": 0,
            "cancelled": False,
            "created": int(time.time()) + self.created,
            **extra,
        }
        self.batches[batch_id] = batch
        return batch

    def _advance(self, batch: dict[str, Any]) -> bool:
        batch["polls"] += 1
        return batch["cancelled"] or batch["polls"] > self.polls

    @staticmethod
    def _kind(text: str, cancelled: bool) -> str:
        if cancelled:
            return "canceled"
        for word, kind in (("fail", "errored"), ("expire", "expired"), ("bad", "invalid")):
            if word in text:
                return kind
        return "succeeded"

    # --- Anthropic ---------------------------------------------------------------------

    def anthropic_create(self, request: httpx2.Request) -> httpx2.Response:
        body = json.loads(request.content)
        return httpx2.Response(200, json=self._anthropic_view(self._new("msgbatch", body["requests"])))

    def _anthropic_view(self, batch: dict[str, Any]) -> dict[str, Any]:
        ended = batch.get("ended", False)
        n = len(batch["entries"])
        kinds = [
            self._kind(json.dumps(e["params"]["messages"]), batch["cancelled"]) for e in batch["entries"]
        ]
        counts = {"processing": 0 if ended else n, "succeeded": 0, "errored": 0, "canceled": 0, "expired": 0}
        if ended:
            for kind in kinds:
                counts["errored" if kind == "invalid" else kind] += 1
        created = datetime.fromtimestamp(batch["created"], UTC).isoformat()
        return {
            "id": batch["id"],
            "type": "message_batch",
            "processing_status": "ended" if ended else ("canceling" if batch["cancelled"] else "in_progress"),
            "request_counts": counts,
            "created_at": created,
            "expires_at": "2023-11-15T22:13:20Z",
            "ended_at": created if ended else None,
            "results_url": f"{self.base}/v1/messages/batches/{batch['id']}/results" if ended else None,
        }

    def anthropic_retrieve(self, request: httpx2.Request, batch_id: str) -> httpx2.Response:
        batch = self.batches[batch_id]
        if not request.url.path.endswith("/results") and self._advance(batch):
            batch["ended"] = True
        return httpx2.Response(200, json=self._anthropic_view(batch))

    def anthropic_list(self, request: httpx2.Request) -> httpx2.Response:
        mine = [
            self._anthropic_view(b) for b in reversed(self.batches.values()) if b["id"].startswith("msgbatch")
        ]
        return httpx2.Response(200, json={"data": mine, "has_more": False, "first_id": None, "last_id": None})

    def anthropic_cancel(self, request: httpx2.Request, batch_id: str) -> httpx2.Response:
        self.batches[batch_id]["cancelled"] = True
        return httpx2.Response(200, json=self._anthropic_view(self.batches[batch_id]))

    def anthropic_results(self, request: httpx2.Request, batch_id: str) -> httpx2.Response:
        lines = []
        batch = self.batches[batch_id]
        for entry in reversed(batch["entries"]):  # not in input order
            params = entry["params"]
            kind = self._kind(json.dumps(params["messages"]), batch["cancelled"])
            if kind == "succeeded":
                result: dict[str, Any] = {"type": "succeeded", "message": _anthropic_message(params)}
            elif kind in ("errored", "invalid"):
                error_type = "overloaded_error" if kind == "errored" else "invalid_request_error"
                result = {
                    "type": "errored",
                    "error": {"type": "error", "error": {"type": error_type, "message": "no"}},
                }
            else:
                result = {"type": kind}
            lines.append(json.dumps({"custom_id": entry["custom_id"], "result": result}))
        return httpx2.Response(200, content=("\n".join(lines) + "\n").encode())

    # --- OpenAI ------------------------------------------------------------------------

    def openai_upload(self, request: httpx2.Request) -> httpx2.Response:
        file_id = f"file-{len(self.files) + 1}"
        lines = [line for line in request.content.split(b"\n") if line.startswith(b'{"custom_id"')]
        self.files[file_id] = b"\n".join(lines) + b"\n"
        return httpx2.Response(
            200,
            json={
                "id": file_id,
                "object": "file",
                "bytes": len(self.files[file_id]),
                "created_at": 0,
                "filename": "in.jsonl",
                "purpose": "batch",
                "status": "processed",
            },
        )

    def openai_content(self, request: httpx2.Request, file_id: str) -> httpx2.Response:
        return httpx2.Response(200, content=self.files[file_id])

    def openai_create(self, request: httpx2.Request) -> httpx2.Response:
        body = json.loads(request.content)
        entries = [json.loads(line) for line in self.files[body["input_file_id"]].splitlines() if line]
        batch = self._new(
            "batch", entries, metadata=body.get("metadata"), input_file_id=body["input_file_id"]
        )
        return httpx2.Response(200, json=self._openai_view(batch))

    def _openai_view(self, batch: dict[str, Any]) -> dict[str, Any]:
        ended = batch.get("ended", False)
        kinds = [self._kind(json.dumps(e["body"]["messages"]), batch["cancelled"]) for e in batch["entries"]]
        done = kinds.count("succeeded") if ended else 0
        status = ("cancelled" if batch["cancelled"] else "completed") if ended else "in_progress"
        return {
            "id": batch["id"],
            "object": "batch",
            "endpoint": "/v1/chat/completions",
            "input_file_id": batch["input_file_id"],
            "completion_window": "24h",
            "status": status,
            "created_at": batch["created"],
            "metadata": batch["metadata"],
            "request_counts": {
                "total": len(kinds),
                "completed": done,
                "failed": len(kinds) - done if ended else 0,
            },
            "output_file_id": batch.get("output"),
            "error_file_id": batch.get("errors"),
        }

    def openai_retrieve(self, request: httpx2.Request, batch_id: str) -> httpx2.Response:
        batch = self.batches[batch_id]
        if not batch.get("ended") and self._advance(batch):
            self._openai_end(batch)
        return httpx2.Response(200, json=self._openai_view(batch))

    def _openai_end(self, batch: dict[str, Any]) -> None:
        batch["ended"] = True
        out, bad = [], []
        for entry in reversed(batch["entries"]):
            body = entry["body"]
            kind = self._kind(json.dumps(body["messages"]), batch["cancelled"])
            line: dict[str, Any] = {"id": "r", "custom_id": entry["custom_id"], "error": None}
            if kind == "succeeded":
                line["response"] = {"status_code": 200, "request_id": "q", "body": _openai_completion(body)}
                out.append(line)
                continue
            if kind == "errored":
                line["response"] = {
                    "status_code": 500,
                    "request_id": "q",
                    "body": {"error": {"type": "server_error", "message": "no"}},
                }
            elif kind == "invalid":
                line["response"] = {
                    "status_code": 400,
                    "request_id": "q",
                    "body": {"error": {"type": "invalid_request_error", "message": "no"}},
                }
            elif kind == "expired":
                line["response"], line["error"] = None, {"code": "batch_expired", "message": "expired"}
            else:
                continue  # cancelled: missing from both files
            bad.append(line)
        for key, lines in (("output", out), ("errors", bad)):
            if lines:
                file_id = f"file-{len(self.files) + 1}"
                self.files[file_id] = b"".join(json.dumps(x).encode() + b"\n" for x in lines)
                batch[key] = file_id

    def openai_list(self, request: httpx2.Request) -> httpx2.Response:
        mine = [self._openai_view(b) for b in reversed(self.batches.values()) if b["id"].startswith("batch_")]
        return httpx2.Response(200, json={"object": "list", "data": mine, "has_more": False})

    def openai_cancel(self, request: httpx2.Request, batch_id: str) -> httpx2.Response:
        self.batches[batch_id]["cancelled"] = True
        return httpx2.Response(200, json=self._openai_view(self.batches[batch_id]))


def _text(messages: list[dict[str, Any]]) -> str:
    return " ".join(m["content"] for m in messages if isinstance(m["content"], str) and m["role"] == "user")


def _anthropic_message(params: dict[str, Any]) -> dict[str, Any]:
    content: list[dict[str, Any]] = [{"type": "text", "text": "echo: " + _text(params["messages"])}]
    if "tools" in params:
        content = [{"type": "tool_use", "id": "t", "name": params["tools"][0]["name"], "input": {"ok": True}}]
    return {
        "id": "msg",
        "type": "message",
        "role": "assistant",
        "model": params["model"],
        "content": content,
        "stop_reason": "tool_use" if "tools" in params else "end_turn",
        "stop_sequence": None,
        "usage": {"input_tokens": 100, "output_tokens": 10},
    }


def _openai_completion(body: dict[str, Any]) -> dict[str, Any]:
    text = json.dumps({"ok": True}) if "response_format" in body else "echo: " + _text(body["messages"])
    return {
        "id": "c",
        "object": "chat.completion",
        "created": 0,
        "model": body["model"],
        "choices": [
            {
                "index": 0,
                "finish_reason": "stop",
                "logprobs": None,
                "message": {"role": "assistant", "content": text, "refusal": None},
            }
        ],
        "usage": {"prompt_tokens": 100, "completion_tokens": 10, "total_tokens": 110},
    }


def adapter(kind: str, server: BatchServer) -> Any:
    http = httpx2.AsyncClient(transport=server.transport())
    if kind == "anthropic":
        api: Any = AnthropicBatches("claude-haiku-4-5", api_key="sk-test")
        api._client = api._online._client = anthropic.AsyncAnthropic(
            api_key="sk-test", http_client=http, max_retries=0
        )
    else:
        api = OpenAIBatches("gpt-4o-mini", api_key="sk-test")
        api._client = api._online._client = openai.AsyncOpenAI(
            api_key="sk-test", base_url="https://api.openai.com/v1", http_client=http, max_retries=0
        )
    return api


def items(*prompts: str) -> list[BatchItem]:
    return [
        BatchItem(f"id {n}/{p}", Request.of(p, system="Be brief.", max_tokens=50))
        for n, p in enumerate(prompts)
    ]


PROVIDERS = ["anthropic", "openai"]


@pytest.mark.parametrize("kind", PROVIDERS)
async def test_a_full_lifecycle_through_the_sdk(tmp_path: Path, kind: str) -> None:
    server = BatchServer(polls=2)
    api = adapter(kind, server)
    clock = VirtualClock()
    work = [*items("one", "two"), BatchItem("structured", Request.of("judge", schema=SCHEMA, max_tokens=50))]
    with BatchLedger(tmp_path / "j.db") as ledger:
        report = await BatchRunner(api, ledger, clock=clock, wall=clock.now).run(work)
        results = ledger.results()
    assert report.succeeded == 3
    assert server.created == 1
    assert results["id 1/two"]["text"] == "echo: two"
    assert results["structured"]["data"] == {"ok": True}
    model = "claude-haiku-4-5" if kind == "anthropic" else "gpt-4o-mini"
    online = cost_of(model, Usage(input_tokens=100, output_tokens=10))
    assert online is not None
    assert results["id 0/one"]["cost"] == pytest.approx(online / 2)


@pytest.mark.parametrize("kind", PROVIDERS)
async def test_errors_and_expiry_map_to_quorum_errors_and_go_out_again(tmp_path: Path, kind: str) -> None:
    server = BatchServer(polls=0)
    api = adapter(kind, server)
    clock = VirtualClock()
    with BatchLedger(tmp_path / "j.db") as ledger:
        report = await BatchRunner(api, ledger, clock=clock, wall=clock.now, max_rounds=2).run(
            items("fine", "please fail", "expire now", "bad one")
        )
        results = ledger.results()
    assert results["id 0/fine"]["status"] == "ok"
    assert results["id 3/bad one"]["error"]["type"] == "BadRequest"
    assert results["id 1/please fail"]["error"]["type"] == "Timeout"  # sent twice, then given up
    assert results["id 2/expire now"]["error"]["type"] == "Timeout"
    assert server.created == 2  # the first batch, then the two that may pass another time
    assert report.resubmitted == 2


@pytest.mark.parametrize("kind", PROVIDERS)
async def test_an_orphan_is_found_again_and_not_created_twice(tmp_path: Path, kind: str) -> None:
    server = BatchServer()
    api = adapter(kind, server)
    work = items("one", "two")
    intent = Intent("job-x", "job-x.1", tuple(i.custom_id for i in work), written_at=1_699_999_000.0)
    created = await api.create(intent, work)
    assert (await api.find(intent)) is not None
    assert (await api.find(intent)).id == created.id
    assert await api.find(intent, frozenset({created.id})) is None
    other = Intent("job-x", "job-x.2", ("a",), written_at=1_699_999_000.0)
    assert await api.find(other) is None  # another size (Anthropic) or another tag (OpenAI)
    later = Intent("job-x", "job-x.1", intent.custom_ids, written_at=time.time() + 3600)
    assert await api.find(later) is None  # created long before the intent: not its batch


@pytest.mark.parametrize("kind", PROVIDERS)
async def test_cancel_leaves_unanswered_items_to_send_again(tmp_path: Path, kind: str) -> None:
    server = BatchServer(polls=5)
    api = adapter(kind, server)
    work = items("one", "two")
    intent = Intent("job", "job.1", tuple(i.custom_id for i in work), written_at=0.0)
    status = await api.create(intent, work)
    await api.cancel(status.id)
    assert (await api.retrieve(status.id)).ended
    results = [r async for r in api.results(status.id, work)]
    kinds = [r.kind for r in results]
    assert kinds in (["canceled", "canceled"], ["expired", "expired"])  # OpenAI lists none: missing
    assert all(isinstance(r.error, errors.TransientError) for r in results)


# --- a real SIGKILL of `quorum batch --batch-api` -------------------------------------------------


class _Bridge(BaseHTTPRequestHandler):
    """The in-memory batch server on a real socket, so a killed process leaves it running."""

    protocol_version = "HTTP/1.1"  # keep-alive: the SDK reuses its connection

    def _serve(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        body = self.rfile.read(length)
        request = httpx2.Request(self.command, f"http://127.0.0.1{self.path}", content=body)
        server: Any = self.server
        with server.lock:
            response = server.batches.handle(request)
            content = response.read()
        self.send_response(response.status_code)
        self.send_header("content-type", response.headers.get("content-type", "application/json"))
        self.send_header("content-length", str(len(content)))
        self.end_headers()
        self.wfile.write(content)

    do_GET = do_POST = _serve

    def log_message(self, *args: Any) -> None:
        return None


@pytest.fixture
def live_server() -> Iterator[tuple[str, BatchServer]]:
    http = ThreadingHTTPServer(("127.0.0.1", 0), _Bridge)
    base = f"http://127.0.0.1:{http.server_address[1]}"
    batches = BatchServer(polls=4, base=base)
    http.batches, http.lock = batches, threading.Lock()  # type: ignore[attr-defined]
    thread = threading.Thread(target=http.serve_forever, daemon=True)
    thread.start()
    yield base, batches
    http.shutdown()


def test_sigkill_at_random_moments_then_resume_pays_for_each_batch_once(
    tmp_path: Path, live_server: tuple[str, BatchServer]
) -> None:
    base, server = live_server
    source = tmp_path / "in.jsonl"
    lines = [{"id": f"k{n}", "prompt": "please fail" if n % 25 == 0 else f"q {n}"} for n in range(100)]
    source.write_text("".join(json.dumps(x) + "\n" for x in lines))
    out = tmp_path / "out.jsonl"
    env = {
        **os.environ,
        "ANTHROPIC_BASE_URL": base,
        "ANTHROPIC_API_KEY": "sk-test",
        "QUORUM_CACHE_DIR": str(tmp_path / "cache"),
        "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src"),
    }
    command = [sys.executable, "-m", "quorum.cli.main", "batch", str(source), "-o", str(out)]
    command += ["-m", "anthropic/claude-haiku-4-5", "--batch-api", "--poll", "0.05", "--no-cache"]
    rng = random.Random(5)
    kills = 0
    for _ in range(3):
        process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(0.8, 2.0))
        if process.poll() is None:
            process.send_signal(signal.SIGKILL)
            kills += 1
        process.wait()
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 1, done.stderr  # the four "please fail" lines fail after 3 batches
    records = [json.loads(x) for x in out.read_text().splitlines()]
    assert [r["custom_id"] for r in records] == [f"k{n}" for n in range(100)]  # each once, in order
    assert Counter(r["status"] for r in records) == {"ok": 96, "error": 4}
    with BatchLedger(Path(str(out) + ".journal")) as ledger:
        claimed = ledger.claimed()
    assert set(server.batches) == claimed  # every batch created is owned by one journaled intent
    first = [b for b in server.batches.values() if any(e["custom_id"] == "k1" for e in b["entries"])]
    assert len(first) == 1  # the item set was submitted once, whatever the kills
    assert kills >= 1
