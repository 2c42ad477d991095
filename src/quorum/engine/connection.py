"""A provider behind the engine's call layer: limits, the one retry layer, accounting.

``quorum.connect("anthropic/claude-sonnet-5-5", rpm=50, itpm=40_000)`` returns a
``Connection``. It is itself a provider (same ``complete``), so workflows take either.
Every call through it waits for its limits (shared by everything using the connection,
nested runs included), is retried when the failure is transient, teaches the limiter what
the provider's headers said, and is charged to the current task and budgets (its
estimated cost reserved against every budget before it is sent: see ``budget``). The
per-call timeout is kept by one watch per connection (``calls.CallWatch``), not a timer
per call. At debug level the ``quorum.calls`` logger records each request and reply,
keys redacted.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Sequence
from typing import TYPE_CHECKING, Any, overload

from quorum import errors
from quorum.engine import checks, context
from quorum.engine.budget import Budget, reserve
from quorum.engine.calls import CallWatch
from quorum.engine.clock import SYSTEM_CLOCK, Clock
from quorum.engine.cost import Cost, estimate
from quorum.engine.limits import (
    MAX_PAUSE_S,
    Concurrency,
    InputTokenRate,
    Limit,
    Limits,
    OutputTokenRate,
    RequestRate,
    TokenRate,
)
from quorum.engine.retry import Retry, advised_wait
from quorum.llm.pricing import Price, price_of
from quorum.llm.provider import Fronting, Provider
from quorum.llm.ratelimits import RateLimitInfo
from quorum.llm.registry import default_model, resolve
from quorum.llm.secrets import redact
from quorum.llm.types import Reply, Request
from quorum.store.cache import ResponseCache, open_cache  # store: the response cache

if TYPE_CHECKING:
    from quorum.engine.cluster.spec import ConnectionSpec

log = logging.getLogger("quorum.calls")


class Connection(Fronting):
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
        self.timeout = checks.seconds("timeout", timeout)
        self.clock = clock
        self._watch: CallWatch | None = None
        # cluster: how a worker builds this same connection (set by ``connect``; ``None``
        # when it cannot be described: a provider object, custom limits, another clock)
        self.spec: ConnectionSpec | None = None

    def __repr__(self) -> str:
        limits = len(self.limits.limits)
        return f"Connection({self.name}/{self.model}, limits={limits}, retry={self.retry.attempts})"

    async def complete(self, request: Request) -> Reply:
        """One call, retried on transient failures; raises the last failure otherwise.

        The error raised is the last call's own, marked ``call_layer_done`` so that a
        task-level retry does not call again. Every call made is counted on the task."""
        cost = estimate(request)
        cache_key, hit = self.cache.lookup(self.provider, request) if self.cache else ("", None)  # store
        if hit is not None:  # store: answered before, costs nothing now
            return hit
        first_try = self.clock.now()
        attempt = 0
        last: errors.QuorumError | None = None
        while True:
            attempt += 1
            try:
                reply = await self._attempt(request, cost)
            except errors.QuorumError as exc:
                _account_failure(exc)
                delay = self._delay(attempt, exc, first_try)
                if delay is None:
                    exc.call_layer_done = True
                    raise
                log.info(
                    "retrying %s/%s in %.2fs after %s", self.name, self.model, delay, errors.describe(exc)
                )
                context.note_retry(attempt, delay, exc)
                last = exc
                await _cut_off_after(last, self.clock.sleep(delay))
                continue
            except asyncio.CancelledError as cancel:
                # Cut off (a task timeout, a deadline) after a failed try: keep that try's
                # error in the chain, so a Timeout outcome can say what really went wrong.
                if last is not None and cancel.__cause__ is None:
                    cancel.__cause__ = last
                raise
            context.charge(reply.usage, reply.cost, reply.latency_s)
            if cache_key and self.cache is not None:  # store: keep the good answer
                self.cache.put(cache_key, reply)  # store
            return reply

    def _delay(self, attempt: int, exc: BaseException, first_try: float) -> float | None:
        """The retry layer's wait, unless it would outlive the run's deadline or the task's
        timeout: then the call's own error is the honest outcome, now rather than later."""
        now = self.clock.now()
        delay = self.retry.delay(attempt, exc, now - first_try)
        if delay is None:
            return None
        left = context.time_left(asyncio.get_running_loop().time())
        return None if left is not None and delay >= left else delay

    async def _attempt(self, request: Request, cost: Cost) -> Reply:
        scope = context.current_scope.get()
        budgets = scope.budgets if scope is not None else ()
        for budget in budgets:
            budget.check()  # fail fast, before waiting for the limits
        _log_request(self, request)
        if not self.limits:  # nothing to hold or to teach: skip the bookkeeping
            reply = await self._spend(request, cost, budgets)
        else:
            reply = await self._limited(request, cost, budgets)
        _log_reply(self, reply)
        return reply

    async def _limited(self, request: Request, cost: Cost, budgets: tuple[Budget, ...]) -> Reply:
        async with self.limits.hold(cost) as settlement:
            try:
                reply = await self._spend(request, cost, budgets)
            except errors.ProviderError as exc:
                if isinstance(exc, errors.InvalidReply):
                    settlement.usage = exc.usage
                self.limits.learn(exc.rate_limits or RateLimitInfo(retry_after=advised_wait(exc)))
                raise
            settlement.usage = reply.usage
            self.limits.learn(reply.rate_limits)
        return reply

    async def _spend(self, request: Request, cost: Cost, budgets: tuple[Budget, ...]) -> Reply:
        """The call, its estimated cost reserved against every budget in scope (checked
        here, after the limits let it through, immediately before it is sent)."""
        if not budgets:
            return await self._timed(request)
        reservation = await reserve(budgets, cost, self._price(budgets), self.model)
        try:
            return await self._timed(request)
        finally:
            reservation.settle()

    def _price(self, budgets: tuple[Budget, ...]) -> Price | None:
        price: Price | None = getattr(self.provider, "price", None) or price_of(self.model)
        if price is None and any(b.dollars is not None for b in budgets):
            raise errors.ConfigError(
                f"a dollar budget is set, but the price of model {self.model!r} is unknown, so "
                f"what its calls cost cannot be counted. Give it a price with "
                f"quorum.llm.pricing.set_price({self.model!r}, Price(input=..., output=..., "
                f"cache_read=..., cache_write=...)) (dollars per million tokens), or cap tokens "
                f"instead (Budget(tokens=...))"
            )
        return price

    async def _timed(self, request: Request) -> Reply:
        if self.timeout is None:
            return await self.provider.complete(request)
        watch = self._watch
        if watch is None or not watch.current():
            watch = self._watch = CallWatch(self.timeout)
        ticket = watch.start()
        try:
            reply = await self.provider.complete(request)
        except asyncio.CancelledError:
            if watch.finish(ticket):
                raise errors.Timeout(
                    f"{self.name}/{self.model} gave no answer within {self.timeout}s", provider=self.name
                ) from None
            raise
        except BaseException:
            watch.finish(ticket)
            raise
        watch.finish(ticket)
        return reply

    async def aclose(self) -> None:
        closer = getattr(self.provider, "aclose", None)
        if closer is not None:
            await closer()

    async def __aenter__(self) -> Connection:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


async def _cut_off_after(last: errors.QuorumError, wait: Awaitable[None]) -> None:
    """Await a retry's wait; if it is cancelled, the failure it waited on is the cause."""
    try:
        await wait
    except asyncio.CancelledError as cancel:
        cancel.__cause__ = last
        raise


def _account_failure(exc: errors.QuorumError) -> None:
    """An answered-but-invalid call is billed; a call that got no answer is counted."""
    if isinstance(exc, errors.InvalidReply) and exc.usage is not None:
        context.charge(exc.usage, exc.cost)
    elif isinstance(exc, errors.ProviderError):
        context.note_failed_call()


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
    max_pause: float = MAX_PAUSE_S,
    limits: Sequence[Limit] = (),
    clock: Clock = SYSTEM_CLOCK,
    cache: bool | str | ResponseCache | None = None,
    **provider_options: Any,
) -> Connection:
    """A ``Connection`` to a model string (``"anthropic/claude-sonnet-5-5"``, ``"local"``,
    ``"fake"``...), a provider object, or, with ``None``, the default model (``QUORUM_MODEL``,
    else Anthropic when ``ANTHROPIC_API_KEY`` is set, else the embedded model).

    ``concurrency`` caps calls in flight; ``rpm``, ``itpm``, ``otpm`` and ``tpm`` are
    requests, input tokens, output tokens and total tokens per minute. ``timeout`` bounds
    each call (seconds; ``None`` for none); ``max_pause`` is the longest pause a provider's
    rate-limit headers may impose (seconds). ``cache``: ``True`` for the response cache in
    its default place, a path, or a ``ResponseCache`` (see ``quorum.store.cache``). Other
    keywords go to the provider (``api_key``, ``base_url``...). Every number is checked: a
    ``ConfigError`` names a bad one.
    """
    if isinstance(model, Connection):
        return model
    checks.seconds("timeout", timeout)
    checks.positive("max_pause", max_pause, unit=" seconds")
    chosen: list[Limit] = list(limits)
    if concurrency is not None:
        chosen.insert(0, Concurrency(checks.count("concurrency", concurrency)))
    for per_minute, option, kind in (
        (rpm, "rpm", RequestRate),
        (itpm, "itpm", InputTokenRate),
        (otpm, "otpm", OutputTokenRate),
        (tpm, "tpm", TokenRate),
    ):
        if per_minute is not None:
            checks.positive(f"{option} (per minute)", per_minute)
            chosen.append(kind(per_minute, max_pause=max_pause, clock=clock))
    if model is None:
        model, why = default_model()
        log.info("no model given: using %s (%s)", model, why)
    provider = resolve(model, **provider_options) if isinstance(model, str) else model
    made = Connection(
        provider, limits=chosen, retry=retry, timeout=timeout, clock=clock, cache=open_cache(cache)
    )
    if isinstance(model, str) and not limits and clock is SYSTEM_CLOCK:  # cluster: describable
        from quorum.engine.cluster.spec import ConnectionSpec  # cluster: not needed before

        made.spec = ConnectionSpec(
            model, provider_options, rpm, itpm, otpm, tpm, concurrency, timeout, retry, max_pause=max_pause
        )
    return made


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
