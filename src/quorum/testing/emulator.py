"""A local stand-in for the Anthropic and OpenAI APIs that the official SDKs talk to unmodified.

Point ``AsyncAnthropic(base_url=emu.anthropic_base_url)`` or
``AsyncOpenAI(base_url=emu.openai_base_url)`` (or a whole subprocess, through
``emu.env()``) at it and test a workflow on the wire, with no key, no network and no
bill::

    async with Emulator(script="rules.json", latency="lognormal:0.8,0.5",
                        errors={"429": 0.05}, rpm=500) as emu:
        client = anthropic.AsyncAnthropic(base_url=emu.anthropic_base_url, api_key="x")
        ...
        assert emu.stats.count(status=429) > 0

The batch APIs of both providers are served too (see ``batch_time`` below). Answers
come from the fake provider's rules (see ``quorum.llm.fake``), so one script
serves logic tests through ``FakeProvider`` and wire tests through the emulator. A
rule's ``error`` is acted out on the wire (``rate_limited`` is a 429 with retry-after,
``timeout`` a hang, ``connection`` a reset, ``invalid_reply`` a broken JSON body...).

The knobs:

``latency``
    seconds per answer, fixed or a distribution (``uniform:0.1,0.5``, ``normal:M,SD``,
    ``lognormal:MEDIAN,SIGMA``, ``exp:MEAN``). An answer starts at half its latency (the
    time to first byte: headers and the first events of a stream) and ends at its full
    latency. A rule's ``latency`` overrides it.
``errors``
    shares of requests that fail on purpose: ``{"429": 0.1, "500": 0.05}``. Kinds:
    ``429`` (with retry-after), ``500``, ``529``, ``reset`` (connection reset, no
    response), ``hang`` (no response until the client gives up or the server stops),
    ``malformed`` (a 200 whose JSON body is broken). Errors and resets come at the time
    to first byte, broken bodies at the full latency, enforced-limit 429s at once.
``rpm``, ``itpm``, ``burst``
    enforced limits on requests and input tokens per minute, answered with real 429s,
    ``retry-after`` and each API's rate-limit headers. They are continuously refilled
    token buckets holding ``burst`` seconds of refill (60 by default: a full minute's
    allowance may be spent at once; 1 forces even pacing).
``cache_ttl``, ``cache_min_tokens``
    prompt-cache entry lifetime (300 s, as Anthropic's default) and the smallest prefix
    cached (0 here so tests stay small; Anthropic's own minimum is 1024 tokens).
``retry_after``
    the seconds an injected 429 asks the client to wait (1).
``batch_time``, ``batch_errored``, ``batch_expired``, ``batch_max_requests``, ``batch_max_bytes``
    the batch APIs (Anthropic ``/v1/messages/batches``; OpenAI ``/v1/files`` and
    ``/v1/batches``): seconds from create until a batch ends (1), the shares of its items
    that end errored or expired whatever the rules say (0), and its size limits (the
    provider's own when not given: 100,000 requests or 256 MB at Anthropic, 50,000
    requests and 200 MB at OpenAI). Items are answered by the same rules as online calls;
    ``stats`` counts ``batches_created`` and the items billed, at half the online price.
``seed``
    the random draws (errors, latency) repeat for the same seed and request order.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import math
import random
import threading
import time
from collections import deque
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

from quorum.errors import ConfigError
from quorum.llm.fake import Rule, load_rules
from quorum.testing._anthropic_api import AnthropicApi
from quorum.testing._anthropic_batches import AnthropicBatches
from quorum.testing._batches import BatchBook, BatchOptions, Item
from quorum.testing._cache import CachePlan, PromptCache
from quorum.testing._http import Exchange, HttpServer
from quorum.testing._latency import Latency, parse_latency
from quorum.testing._limits import Limits
from quorum.testing._openai_api import OpenAIApi
from quorum.testing._openai_batches import OpenAIBatches
from quorum.testing._stats import EmulatorStats
from quorum.testing._wire import Call, Content, Fault, WireApi, WireError, answer

ERROR_KINDS = ("429", "500", "529", "reset", "hang", "malformed")
DUMMY_KEY = "emulator-dummy-key"
RECENT = 100
Script = str | Path | Sequence[Any] | None

__all__ = ["DUMMY_KEY", "ERROR_KINDS", "Emulator", "EmulatorStats", "Latency", "parse_latency"]


class Emulator:
    """An Anthropic- and OpenAI-compatible HTTP server on 127.0.0.1; see the module docs.

    Use it as an async context manager in async code, or ``with emu.in_thread():``
    from synchronous code (tests that start subprocesses). ``stats`` counts what
    happened on the wire; ``recent`` holds the last 100 ``(path, JSON body)`` received.
    """

    def __init__(
        self,
        script: Script = None,
        *,
        latency: float | str | Latency = 0.0,
        errors: Mapping[str, float] | None = None,
        rpm: int | None = None,
        itpm: int | None = None,
        burst: float = 60.0,
        port: int = 0,
        host: str = "127.0.0.1",
        seed: int = 0,
        cache_ttl: float = 300.0,
        cache_min_tokens: int = 0,
        retry_after: int = 1,
        batch_time: float = 1.0,
        batch_errored: float = 0.0,
        batch_expired: float = 0.0,
        batch_max_requests: int | None = None,
        batch_max_bytes: int | None = None,
    ) -> None:
        self.rules: list[Rule] = _rules_of(script)
        self.latency = parse_latency(latency)
        self.errors = check_error_shares(errors or {})
        self.retry_after = retry_after
        self.stats = EmulatorStats()
        # The last request bodies, for tests that check what a client sent.
        self.recent: deque[tuple[str, Any]] = deque(maxlen=RECENT)
        self._rng = random.Random(seed)
        self._limits = _limits(rpm, itpm, burst)
        self._cache = PromptCache(cache_ttl, time.monotonic, cache_min_tokens)
        self._apis: dict[str, WireApi] = {api.path: api for api in (AnthropicApi(), OpenAIApi())}
        options = BatchOptions(batch_time, batch_errored, batch_expired, batch_max_requests, batch_max_bytes)
        self._batch_book = BatchBook(options, self.stats, random.Random(seed))
        self._anthropic_batches = AnthropicBatches(self._batch_book, self._batch_item)
        self._openai_batches = OpenAIBatches(self._batch_book, self._batch_item)
        self._server = HttpServer(self._handle, self.stats, host=host, port=port)
        self._host = host
        self._ids = itertools.count(1)
        self._running = False

    # --- lifecycle ----------------------------------------------------------------

    async def start(self) -> None:
        await self._server.start()
        self._running = True

    async def stop(self) -> None:
        """Stop serving; requests still hanging or waiting are dropped."""
        self._running = False
        await self._server.stop()

    async def __aenter__(self) -> Emulator:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    @contextlib.contextmanager
    def in_thread(self) -> Iterator[Emulator]:
        """Serve from a background thread with its own event loop, for synchronous code."""
        runner = _ThreadRunner(self)
        runner.start()
        try:
            yield self
        finally:
            runner.stop()

    # --- where to reach it ------------------------------------------------------------

    @property
    def port(self) -> int:
        if not self._running:
            raise RuntimeError(
                "the emulator is not running: use `async with Emulator() as emu:` "
                "or `with Emulator().in_thread() as emu:`"
            )
        return self._server.port

    @property
    def url(self) -> str:
        return f"http://{self._host}:{self.port}"

    @property
    def anthropic_base_url(self) -> str:
        """For ``AsyncAnthropic(base_url=...)``: the SDK adds ``/v1/messages`` itself."""
        return self.url

    @property
    def openai_base_url(self) -> str:
        """For ``AsyncOpenAI(base_url=...)``: OpenAI base URLs end in ``/v1``."""
        return self.url + "/v1"

    def env(self) -> dict[str, str]:
        """Environment variables that point both SDKs (and quorum) at this emulator."""
        return {
            "ANTHROPIC_BASE_URL": self.anthropic_base_url,
            "ANTHROPIC_API_KEY": DUMMY_KEY,
            "OPENAI_BASE_URL": self.openai_base_url,
            "OPENAI_API_KEY": DUMMY_KEY,
        }

    # --- serving ------------------------------------------------------------------

    async def _handle(self, exchange: Exchange) -> None:
        api = self._apis.get(exchange.path)
        if api is None and exchange.path.startswith(BATCH_PATHS):
            batches = (
                self._anthropic_batches if exchange.path.startswith("/v1/messages/") else self._openai_batches
            )
            await batches.handle(exchange)
            return
        if api is None or exchange.method != "POST":
            _not_routed(exchange, api)
            return
        wire = _Responder(api, exchange, f"emu{next(self._ids):010d}", self._limits)
        if not api.authorized(exchange.headers):
            wire.error(
                401,
                "no API key was sent: send x-api-key or Authorization: Bearer "
                "(any value works with this emulator)",
            )
            return
        try:
            body = json.loads(await exchange.body())
            self.recent.append((exchange.path, body))
            call = api.parse(body, exchange.headers)
        except WireError as exc:
            wire.error(exc.status, str(exc))
            return
        except ValueError as exc:
            wire.error(400, f"the request body is not valid JSON: {exc}")
            return
        await self._serve_call(call, wire)

    async def _serve_call(self, call: Call, wire: _Responder) -> None:
        injected = self._draw_error()
        denial = self._limits.charge(call.input_tokens) if self._limits else None
        if denial is not None:
            wire.error(429, denial.message, retry_after=denial.retry_after)
            return
        outcome, rule_latency = answer(self.rules, call)
        latency = rule_latency if rule_latency is not None else self.latency.sample(self._rng)
        if injected is not None:
            outcome = injected
        if isinstance(outcome, Fault):
            await self._fail(outcome, call, wire, latency)
        else:
            await self._reply(outcome, call, wire, latency)

    def _batch_item(self, api: WireApi, custom_id: str, params: Any, headers: Mapping[str, str]) -> Item:
        """One batch request, answered as the same online call would be (see ``_batches``)."""
        fate = self._batch_book.fate()
        if fate == "expired":
            return Item(custom_id, "expired", 0)
        try:
            call = api.parse(params, headers)
        except WireError as exc:
            return Item(custom_id, "errored", exc.status, json.loads(api.error(exc.status, str(exc))))
        if fate == "errored":
            message = "injected batch item error (emulator batch_errored)"
            return Item(custom_id, "errored", 500, json.loads(api.error(500, message)))
        outcome, _ = answer(self.rules, call)
        if isinstance(outcome, Fault):
            status = int(outcome.kind) if outcome.kind.isdigit() else 500
            return Item(custom_id, "errored", status, json.loads(api.error(status, outcome.message)))
        usage = api.usage(call, outcome, CachePlan())
        body = json.loads(api.message(call, outcome, usage, f"emu{next(self._ids):010d}"))
        return Item(custom_id, "succeeded", 200, body, call.model, usage)

    def _draw_error(self) -> Fault | None:
        roll = self._rng.random()  # drawn for every request, so runs repeat
        for kind, share in self.errors.items():
            if roll < share:
                return Fault(
                    kind,
                    f"injected {kind} (emulator errors={{{kind!r}: {share}}})",
                    self.retry_after if kind == "429" else None,
                )
            roll -= share
        return None

    async def _reply(self, content: Content, call: Call, wire: _Responder, latency: float) -> None:
        plan = self._cache.plan(call.prefixes)
        usage = wire.api.usage(call, content, plan)
        await _sleep(latency / 2)
        self._response_started(plan)
        if call.stream:
            first, rest = wire.api.events(call, content, usage, wire.ident)
            await wire.start_stream(first)
            await _sleep(latency / 2)
            await wire.finish_stream(rest)
        else:
            await _sleep(latency / 2)
            wire.json(200, wire.api.message(call, content, usage, wire.ident))

    def _response_started(self, plan: CachePlan) -> None:
        # The cache entry appears only now, once the writing response has begun.
        self._cache.store(plan)
        if plan.write_tokens:
            self.stats.cache_writes += 1
            self.stats.cache_write_tokens += plan.write_tokens
        if plan.read_tokens:
            self.stats.cache_reads += 1
            self.stats.cache_read_tokens += plan.read_tokens

    async def _fail(self, fault: Fault, call: Call, wire: _Responder, latency: float) -> None:
        if fault.kind == "hang":
            await asyncio.Event().wait()  # until the client leaves or the server stops
        await _sleep(latency / 2)
        if fault.kind == "reset":
            await wire.exchange.reset()
        elif fault.kind == "malformed":
            await _sleep(latency / 2)
            await wire.broken(call.stream)
        else:
            wire.error(int(fault.kind), fault.message, retry_after=fault.retry_after)


class _Responder:
    """Writes one API's responses with the headers every response carries."""

    def __init__(self, api: WireApi, exchange: Exchange, ident: str, limits: Limits) -> None:
        self.api = api
        self.exchange = exchange
        self.ident = ident
        self._limits = limits

    def headers(self, content_type: str) -> list[tuple[str, str]]:
        headers = [("content-type", content_type), (self.api.request_id_header, "req_" + self.ident)]
        if self._limits:
            headers += self.api.limit_headers(self._limits.states())
        return headers

    def json(self, status: int, body: bytes, extra: Sequence[tuple[str, str]] = ()) -> None:
        self.exchange.respond(status, [*self.headers("application/json"), *extra], body)

    def error(self, status: int, message: str, *, retry_after: int | None = None) -> None:
        extra = [("retry-after", str(retry_after))] if retry_after is not None else []
        if status == 429 and not extra:
            extra = [("retry-after", "1")]
        self.json(status, self.api.error(status, message), extra)

    async def start_stream(self, first: bytes) -> None:
        headers = [*self.headers("text/event-stream; charset=utf-8"), ("cache-control", "no-cache")]
        await self.exchange.start_stream(200, headers)
        await self.exchange.write_chunk(first)

    async def finish_stream(self, rest: bytes) -> None:
        await self.exchange.write_chunk(rest)
        await self.exchange.end_stream()

    async def broken(self, stream: bool) -> None:
        if stream:
            await self.start_stream(self.api.malformed(True))
            await self.exchange.end_stream()
        else:
            self.json(200, self.api.malformed(False))


class _ThreadRunner:
    """Runs an emulator's event loop in a daemon thread until ``stop``."""

    def __init__(self, emulator: Emulator) -> None:
        self._emulator = emulator
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._done: asyncio.Event | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="quorum-emulator", daemon=True)

    def start(self) -> None:
        self._thread.start()
        self._ready.wait()
        if self._error is not None:
            raise self._error

    def stop(self) -> None:
        if self._loop is not None and self._done is not None:
            self._loop.call_soon_threadsafe(self._done.set)
        self._thread.join()

    def _run(self) -> None:
        try:
            asyncio.run(self._serve())
        except Exception as exc:  # reported to the starting thread, not lost
            self._error = exc
        finally:
            self._ready.set()

    async def _serve(self) -> None:
        async with self._emulator:
            self._loop = asyncio.get_running_loop()
            self._done = asyncio.Event()
            self._ready.set()
            await self._done.wait()


def check_error_shares(errors: Mapping[str, float]) -> dict[str, float]:
    """Validate ``errors`` shares: known kinds, each in [0, 1], summing to at most 1."""
    shares = {str(k): float(v) for k, v in errors.items() if v}
    for kind, share in shares.items():
        if kind not in ERROR_KINDS:
            raise ConfigError(f"unknown error kind {kind!r}; use one of {', '.join(ERROR_KINDS)}")
        if not 0.0 <= share <= 1.0 or math.isnan(share):
            raise ConfigError(f"error share for {kind!r} must be between 0 and 1, got {share}")
    if sum(shares.values()) > 1.0 + 1e-9:
        raise ConfigError(f"error shares add up to {sum(shares.values()):g}; they must be at most 1")
    return shares


def _rules_of(script: Script) -> list[Rule]:
    if script is None:
        return []
    if isinstance(script, (str, Path)):
        return load_rules(script)
    items = list(script)
    if all(isinstance(item, Rule) for item in items):
        return items
    return load_rules(items)


def _limits(rpm: int | None, itpm: int | None, burst: float) -> Limits:
    for name, value in (("rpm", rpm), ("itpm", itpm)):
        if value is not None and value < 1:
            raise ConfigError(f"{name} must be a positive number per minute, got {value}")
    if not burst > 0:
        raise ConfigError(f"burst is seconds of refill the bucket holds: must be > 0, got {burst}")
    return Limits(rpm, itpm, burst, time.monotonic)


BATCH_PATHS = ("/v1/messages/batches", "/v1/batches", "/v1/files")
_ROUTES = (
    "POST /v1/messages and /v1/messages/batches (Anthropic), "
    "POST /v1/chat/completions, /v1/files and /v1/batches (OpenAI)"
)


def _not_routed(exchange: Exchange, api: WireApi | None) -> None:
    """A health answer on ``GET /``, else 405 or 404 in the API's own error format."""
    if api is None and exchange.method == "GET" and exchange.path in ("/", "/health"):
        body = json.dumps({"status": "ok", "serves": _ROUTES}).encode()
        exchange.respond(200, [("content-type", "application/json")], body)
        return
    if api is not None:
        status, text = 405, f"{exchange.method} is not allowed on {exchange.path}: use POST"
    else:
        api = AnthropicApi() if not exchange.path.startswith("/v1/chat") else OpenAIApi()
        status, text = 404, f"no route {exchange.method} {exchange.path}: this emulator serves {_ROUTES}"
    exchange.respond(status, [("content-type", "application/json")], api.error(status, text))


async def _sleep(seconds: float) -> None:
    if seconds > 0:
        await asyncio.sleep(seconds)
