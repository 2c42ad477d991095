"""A provider behind the engine's call layer: limits, the one retry layer, accounting.

``quorum.connect("anthropic/claude-sonnet-5-5", rpm=50, itpm=40_000)`` returns a
``Connection``. It is itself a provider (same ``complete``), so workflows take either.
Every call through it waits for its limits (shared by everything using the connection,
nested runs included), is retried when the failure is transient, teaches the limiter what
the provider's headers said, and is charged to the current task and budgets. At debug
level the ``quorum.calls`` logger records each request and reply, keys redacted.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any, overload

from quorum import errors
from quorum.engine import context
from quorum.engine.clock import SYSTEM_CLOCK, Clock
from quorum.engine.cost import estimate
from quorum.engine.limits import (
    Concurrency,
    InputTokenRate,
    Limit,
    Limits,
    OutputTokenRate,
    RequestRate,
    TokenRate,
)
from quorum.engine.retry import Retry, advised_wait
from quorum.llm.provider import Capabilities, Provider
from quorum.llm.ratelimits import RateLimitInfo
from quorum.llm.registry import default_model, resolve
from quorum.llm.secrets import redact
from quorum.llm.types import Reply, Request
from quorum.store.cache import ResponseCache, open_cache  # store: the response cache

log = logging.getLogger("quorum.calls")


class Connection:
    """``provider`` with ``limits``, ``retry`` and a per-call ``timeout`` around it."""

    def __init__(
        self,
        provider: Provider,
        *,
        limits: Sequence[Limit] = (),
        retry: Retry | None = None,
        timeout: float | None = None,
        clock: Clock = SYSTEM_CLOCK,
        cache: ResponseCache | None = None,
    ) -> None:
        self.cache = cache  # store: a hit skips the limits, the retries and the bill
        self.provider = provider
        self.limits = Limits(limits)
        self.retry = retry or Retry()
        self.timeout = timeout
        self.clock = clock

    @property
    def name(self) -> str:
        return self.provider.name

    @property
    def model(self) -> str:
        return self.provider.model

    @property
    def capabilities(self) -> Capabilities:
        return self.provider.capabilities

    def __repr__(self) -> str:
        limits = len(self.limits.limits)
        return f"Connection({self.name}/{self.model}, limits={limits}, retry={self.retry.attempts})"

    async def complete(self, request: Request) -> Reply:
        """One call, retried on transient failures; raises the last failure otherwise."""
        cache_key, hit = self.cache.lookup(self.provider, request) if self.cache else ("", None)  # store
        if hit is not None:  # store
            return hit  # store
        first_try = self.clock.now()
        attempt = 0
        while True:
            attempt += 1
            context.check_budget()
            try:
                reply = await self._attempt(request)
            except errors.QuorumError as exc:
                if isinstance(exc, errors.InvalidReply) and exc.usage is not None:
                    context.charge(exc.usage, exc.cost)
                delay = self.retry.delay(attempt, exc, self.clock.now() - first_try)
                if delay is None:
                    raise
                log.info(
                    "retrying %s/%s in %.2fs after %s", self.name, self.model, delay, errors.describe(exc)
                )
                context.note_retry(attempt, delay, exc)
                await self.clock.sleep(delay)
                continue
            context.charge(reply.usage, reply.cost, reply.latency_s)
            if cache_key and self.cache is not None:  # store: keep the good answer
                self.cache.put(cache_key, reply)  # store
            return reply

    async def _attempt(self, request: Request) -> Reply:
        _log_request(self, request)
        if not self.limits:  # nothing to hold or to teach: skip the bookkeeping
            reply = await self._timed(request)
        else:
            reply = await self._limited(request)
        _log_reply(self, reply)
        return reply

    async def _limited(self, request: Request) -> Reply:
        async with self.limits.hold(estimate(request)) as settlement:
            try:
                reply = await self._timed(request)
            except errors.ProviderError as exc:
                if isinstance(exc, errors.InvalidReply):
                    settlement.usage = exc.usage
                self.limits.learn(exc.rate_limits or RateLimitInfo(retry_after=advised_wait(exc)))
                raise
            settlement.usage = reply.usage
            self.limits.learn(reply.rate_limits)
        return reply

    async def _timed(self, request: Request) -> Reply:
        if self.timeout is None:
            return await self.provider.complete(request)
        try:
            async with asyncio.timeout(self.timeout):
                return await self.provider.complete(request)
        except TimeoutError as exc:
            raise errors.Timeout(
                f"{self.name}/{self.model} gave no answer within {self.timeout}s", provider=self.name
            ) from exc

    async def aclose(self) -> None:
        closer = getattr(self.provider, "aclose", None)
        if closer is not None:
            await closer()

    async def __aenter__(self) -> Connection:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


def connect(
    model: str | Provider | None = None,
    *,
    concurrency: int | None = None,
    rpm: float | None = None,
    itpm: float | None = None,
    otpm: float | None = None,
    tpm: float | None = None,
    retry: Retry | None = None,
    timeout: float | None = 300.0,
    limits: Sequence[Limit] = (),
    clock: Clock = SYSTEM_CLOCK,
    cache: bool | str | ResponseCache | None = None,
    **provider_options: Any,
) -> Connection:
    """A ``Connection`` to a model string (``"anthropic/claude-sonnet-5-5"``, ``"local"``,
    ``"fake"``...), a provider object, or, with ``None``, the default model (``QUORUM_MODEL``,
    else Anthropic when ``ANTHROPIC_API_KEY`` is set, else the embedded model).

    ``concurrency`` caps calls in flight; ``rpm``, ``itpm``, ``otpm`` and ``tpm`` are
    requests, input tokens, output tokens and total tokens per minute. ``cache``: ``True``
    for the response cache in its default place, a path, or a ``ResponseCache`` (see
    ``quorum.store.cache``). Other keywords go to the provider (``api_key``, ``base_url``...).
    """
    if isinstance(model, Connection):
        return model
    if model is None:
        model, why = default_model()
        log.info("no model given: using %s (%s)", model, why)
    provider = resolve(model, **provider_options) if isinstance(model, str) else model
    chosen: list[Limit] = list(limits)
    if concurrency is not None:
        chosen.insert(0, Concurrency(concurrency))
    for per_minute, kind in (
        (rpm, RequestRate),
        (itpm, InputTokenRate),
        (otpm, OutputTokenRate),
        (tpm, TokenRate),
    ):
        if per_minute is not None:
            chosen.append(kind(per_minute, clock=clock))
    return Connection(
        provider,
        limits=chosen,
        retry=retry,
        timeout=timeout,
        clock=clock,
        cache=open_cache(cache),  # store
    )


def _log_request(conn: Connection, request: Request) -> None:
    if log.isEnabledFor(logging.DEBUG):
        log.debug("request to %s/%s: %s", conn.name, conn.model, redact(repr(request)))


def _log_reply(conn: Connection, reply: Reply) -> None:
    if log.isEnabledFor(logging.DEBUG):
        log.debug("reply from %s/%s: %s", conn.name, conn.model, redact(repr(reply)))


class LazyConnection:
    """A workflow's ``llm``: the connection to its ``model``, made on first use.

    Assigning a provider (or ``None``) sets it; reading it connects to ``obj.model`` the
    first time, so building a workflow needs no key and a static-only review never
    connects. ``llm = LazyConnection()`` in a class with a ``model`` attribute."""

    def __set_name__(self, owner: type, name: str) -> None:
        self._slot = f"_{name}_connection"

    @overload
    def __get__(self, obj: None, owner: type | None = None) -> LazyConnection: ...

    @overload
    def __get__(self, obj: object, owner: type | None = None) -> Connection: ...

    def __get__(self, obj: object | None, owner: type | None = None) -> Connection | LazyConnection:
        if obj is None:
            return self
        made: Connection | None = obj.__dict__.get(self._slot)
        if made is None:
            made = connect(getattr(obj, "model", None))
            obj.__dict__[self._slot] = made
        return made

    def __set__(self, obj: object, provider: Provider | None) -> None:
        obj.__dict__[self._slot] = connect(provider) if provider is not None else None
