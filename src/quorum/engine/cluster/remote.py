"""The driver's side of a run on a cluster: calls sent out, journal and cache kept here.

``RemoteConnection(executor, llm)`` has a connection's ``complete(request)``, but the call
is made by the executor's workers, each through a connection built from ``llm.spec`` (the
``ConnectionSpec`` that ``quorum.connect`` recorded, with the endpoint the driver's
provider calls made explicit, since the workers do not see the driver's environment).
The driver keeps what must have one writer: a cache hit is answered here, without a
worker (SQLite never leaves the driver's machine), and a new answer is stored here as it
arrives. Its usage and cost are charged
to the driver's task, so a run's summary, its budget and its journal see them as if the
call had been made here.

``run_on(executor, llm.complete, items, ...)`` is ``run(..., executor=...)``: the engine
runs at the driver over ``RemoteConnection.complete``, so its policy, deadline, events,
task ids and journal (``journal=PATH``: each outcome recorded here as it arrives, and a
killed driver resumes like any job) are the same as on one machine; only the calls
travel. The driver keeps ``(workers + 1) x 4 x concurrency`` tasks in flight: each
worker's window full and one read ahead, no more (memory O(workers x concurrency)).

Only a connection's ``complete`` can be sent this way: any other function would close
over live objects (a connection, a client) that cannot cross to another process. A task
of your own goes through ``RayExecutor.stream(items, llm=spec, fn=...)`` instead, with
``fn(connection, item)`` a module-level async function the workers can import.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from quorum.engine import context
from quorum.engine.budget import reserve
from quorum.engine.cluster.executor import FINISH_TIMEOUT_S, WINDOW_PER_CALL, ClusterStream, RayExecutor
from quorum.engine.cluster.spec import ConnectionSpec
from quorum.engine.connection import Connection
from quorum.engine.cost import estimate
from quorum.engine.outcome import Outcome, RunResult
from quorum.errors import ConfigError, QuorumError
from quorum.llm.types import Reply, Request, Usage
from quorum.store.cache import reply_fields


class ClusterUnavailable(ConfigError):
    """The cluster or its workers could not be started: no call can be made."""


@dataclass(slots=True)
class _Sent:
    request: Request
    answer: asyncio.Future[Outcome[Any]]


class RemoteConnection(Connection):
    """``llm``'s calls made by ``executor``'s workers; cache and accounting at the driver.

    A ``Connection`` (so ``quorum.connect(remote)`` and a workflow's ``llm=`` take it as
    it is, and its calls are charged once): only its calls travel. A request's
    ``on_first_byte`` callback cannot travel; it is called here when the answer arrives."""

    def __init__(self, executor: RayExecutor, llm: Connection, *, timeout: float | None = None) -> None:
        spec = _pin_endpoint(spec_of(llm), llm)
        super().__init__(llm.provider, retry=llm.retry, timeout=None, clock=llm.clock, cache=llm.cache)
        self.executor = executor
        self.connection = llm
        self.spec = self.workers_spec = spec
        self.task_timeout = timeout  # per call on the workers, besides the spec's own
        self.dispatched = 0  # calls sent to a worker (cache hits are not)
        self._feed: asyncio.Queue[_Sent | None] = asyncio.Queue()
        self._waiting: dict[int, asyncio.Future[Outcome[Any]]] = {}
        self._stream: ClusterStream | None = None
        self._reader: asyncio.Task[None] | None = None
        self._starting = asyncio.Lock()
        self._failed: BaseException | None = None

    def __repr__(self) -> str:
        return f"RemoteConnection({self.workers_spec.model}, workers={self.executor.workers})"

    async def complete(self, request: Request) -> Reply:
        """The reply to ``request``: from the driver's cache, else from a worker."""
        cache = self.cache
        key, hit = cache.lookup(self.provider, request) if cache else ("", None)
        if hit is not None:
            return hit
        scope = context.current_scope.get()
        budgets = scope.budgets if scope is not None else ()
        context.check_budget()  # a spent budget sends nothing more, as on one machine
        await self._start()
        # As on one machine, the call's estimated cost is held against every budget until
        # its answer is charged: with a window of calls out at every worker, checking
        # only what came back would let all of them pass the cap.
        price = self._price(budgets)
        held = await reserve(budgets, estimate(request), price, self.model) if budgets else None
        try:
            outcome = await self._dispatch(request)
            _charge(outcome)
        finally:
            if held is not None:
                held.settle()
        if request.on_first_byte is not None and outcome.ok:
            request.on_first_byte()
        if not outcome.ok:
            raise outcome.error or QuorumError(outcome.error_message or "the call failed on a worker")
        reply = outcome.value
        assert isinstance(reply, Reply), f"a worker's default task answers with a Reply, got {reply!r}"
        if key and cache is not None:
            cache.put(key, reply)
        return reply

    async def _dispatch(self, request: Request) -> Outcome[Any]:
        """``request``'s outcome from a worker. Its first-byte callback stays here (it
        cannot travel); the caller is told when the answer is back."""
        if request.on_first_byte is not None:
            request = replace(request, on_first_byte=None)
        sent = _Sent(request, asyncio.get_running_loop().create_future())
        self._feed.put_nowait(sent)
        try:
            return await sent.answer
        finally:
            sent.answer.cancel()  # cut off here: a worker's late answer is dropped

    async def aclose(self) -> None:
        """End the workers and the driver's connection. With nothing awaited any more the
        stream is let end first, so each worker returns its unspent lease; otherwise the
        calls still out are abandoned (their leases expire)."""
        self._feed.put_nowait(None)
        if self._reader is not None and not self._waiting:
            await asyncio.wait({self._reader}, timeout=FINISH_TIMEOUT_S)
        if self._stream is not None:
            await self._stream.aclose()
        if self._reader is not None:
            self._reader.cancel()
            await asyncio.gather(self._reader, return_exceptions=True)
        for answer in self._waiting.values():
            answer.cancel()
        await self.connection.aclose()

    async def __aenter__(self) -> RemoteConnection:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # -- the cluster stream ----------------------------------------------------------------

    async def _start(self) -> None:
        async with self._starting:
            if self._failed is not None:
                raise ClusterUnavailable(str(self._failed)) from self._failed
            if self._stream is not None:
                return
            stream = self.executor.stream(
                self._requests(),
                llm=self.workers_spec,
                ids=lambda index, _r: str(index),
                timeout=self.task_timeout,
            )
            try:
                await stream.__aenter__()
            except ConfigError as exc:
                self._failed = exc
                raise ClusterUnavailable(str(exc)) from exc
            self._stream = stream
            self._reader = asyncio.create_task(self._read(stream))

    async def _requests(self) -> AsyncIterator[Request]:
        """What the workers are sent, in order: the n-th request sent is the cluster's
        item n, so its outcome finds its waiter by index."""
        while (sent := await self._feed.get()) is not None:
            if sent.answer.done():  # its task was cut off while it waited here
                continue
            self._waiting[self.dispatched] = sent.answer
            self.dispatched += 1
            yield sent.request

    async def _read(self, stream: ClusterStream) -> None:
        try:
            async for outcome in stream:
                answer = self._waiting.pop(outcome.index, None)
                if answer is not None and not answer.done():
                    answer.set_result(outcome)
        except Exception as exc:  # the stream broke: every waiter learns why
            self._failed = exc
            for answer in self._waiting.values():
                if not answer.done():
                    answer.set_exception(ClusterUnavailable(f"the cluster stream failed: {exc}"))
            self._waiting.clear()


def _charge(outcome: Outcome[Any]) -> None:
    """Account the worker's calls to the driver's task: failed ones counted, answered ones
    billed (its usage and cost are the outcome's, all its calls together)."""
    answered = outcome.ok or outcome.cost is not None or outcome.usage != Usage()
    for _ in range(max(0, outcome.calls - (1 if answered else 0))):
        context.note_failed_call()
    if answered:
        latency = outcome.value.latency_s if outcome.ok and isinstance(outcome.value, Reply) else 0.0
        context.charge(outcome.usage, outcome.cost, latency)


def spec_of(llm: Connection) -> ConnectionSpec:
    """The ``ConnectionSpec`` ``quorum.connect`` recorded on ``llm``, or a ``ConfigError``."""
    if not isinstance(llm, Connection) or llm.spec is None:
        raise ConfigError(
            f"{llm!r} cannot be sent to a cluster: only a connection made by quorum.connect() with a "
            f"model string (and no limits=[...] objects or clock) can be described to the workers; "
            f"e.g. quorum.connect('anthropic/claude-sonnet-5-5', rpm=4000, itpm=400_000)"
        )
    return llm.spec


def _pin_endpoint(spec: ConnectionSpec, llm: Connection) -> ConnectionSpec:
    """The spec with the endpoint the driver's provider calls: a ``base_url`` taken from the
    driver's environment would not reach the workers, whose answers would then land in the
    driver's cache under another endpoint's key."""
    if "base_url" in spec.options:
        return spec
    base = getattr(llm.provider, "base_url", None) or getattr(llm.provider, "_base_url", None)
    if not isinstance(base, str):
        return spec
    return replace(spec, options={**spec.options, "base_url": base})


def connection_of(fn: Callable[..., Awaitable[Any]]) -> Connection:
    """The connection whose ``complete`` is ``fn``, or a ``ConfigError`` saying what can run."""
    owner = getattr(fn, "__self__", None)
    if isinstance(owner, Connection) and getattr(fn, "__func__", None) is Connection.complete:
        return owner
    raise ConfigError(
        f"run(..., executor=...) sends a connection's calls to the cluster, so its function must be "
        f"llm.complete of a quorum.connect() connection, got {fn!r}; for a task of your own use "
        f"executor.stream(items, llm=ConnectionSpec(...), fn=task) with task(connection, item) a "
        f"module-level async function the workers can import"
    )


# -- run(..., executor=...) -------------------------------------------------------------------


async def run_on(
    executor: RayExecutor,
    fn: Callable[[Request], Awaitable[Reply]],
    items: Iterable[Request] | AsyncIterable[Request],
    *,
    journal: str | Path | None,
    options: dict[str, Any],
) -> RunResult[Reply]:
    """``run(llm.complete, items, executor=executor, **options)``; see the module."""
    from quorum.engine.collect import run
    from quorum.engine.jobs import run_journaled

    if not isinstance(executor, RayExecutor):
        raise ConfigError(f"executor must be a quorum.RayExecutor, got {executor!r}")
    if options.get("concurrency") is not None:
        raise ConfigError(
            "with an executor, concurrency is per worker: give RayExecutor(workers=N, concurrency=C), "
            "not run(concurrency=...)"
        )
    llm = connection_of(fn)
    in_flight = in_flight_for(executor)
    async with RemoteConnection(executor, llm) as remote:
        options = {**options, "concurrency": in_flight}
        if journal is None:
            return await run(remote.complete, items, **options)
        return await run_journaled(
            remote.complete, items, journal, encode=reply_to_data, decode=reply_from_data, **options
        )


def in_flight_for(executor: RayExecutor) -> int:
    """Tasks a driver keeps in flight: every worker's window (``4 x concurrency``) full,
    and one more window read ahead."""
    return (executor.workers + 1) * WINDOW_PER_CALL * executor.concurrency


def reply_to_data(reply: Reply) -> dict[str, Any]:
    """A ``Reply`` as JSON data for the journal (its SDK response and headers left out)."""
    return {**reply_fields(reply), "cost": reply.cost}


def reply_from_data(data: dict[str, Any]) -> Reply:
    fields = dict(data)
    usage = Usage(*fields.pop("usage"))
    return replace(Reply(**fields), usage=usage)
