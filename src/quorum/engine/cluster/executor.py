"""``RayExecutor``: quorum's engine on many processes or machines, one account's limits.

The driver (this process) reads the items, hands them to stateless worker actors and
collects the outcomes; every worker runs quorum's async engine over what it is given,
through a connection built from a ``ConnectionSpec`` whose rate limits are leases from
the account's one limiter actor (``ledger.py``, ``lease.py``)::

    executor = RayExecutor(workers=4, concurrency=32)          # address=None: a local cluster
    spec = ConnectionSpec("anthropic/claude-sonnet-5-5", rpm=4000, itpm=400_000)
    async with executor.stream(requests, llm=spec) as outcomes:
        async for outcome in outcomes:                          # as they finish
            ...
    executor.shutdown()

Flow control: each worker holds at most ``4 x concurrency`` items (its engine runs
``concurrency`` of them; the rest wait there, or are done and wait for the next exchange,
so it never idles between pushes: with ``2 x`` a worker ran dry a third of the time, an
exchange taking 40-90 ms from the driver's send to the worker on a busy machine), so the
driver's memory is O(workers x concurrency) whatever the number of items; items go out
in batches and outcomes come back in batches (all that finished since the last exchange), so
the messages per item shrink as the load grows.

Faults: the driver knows which items each worker holds. When a worker dies (killed,
its node lost), its items go back to the front of the queue, a replacement worker is
started, and the items are sent again; an outcome is delivered only for an item still
held by the worker that reports it, so none is lost and none is delivered twice.
"""

from __future__ import annotations

import asyncio
import itertools
from collections import deque
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterable
from contextlib import suppress
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

from quorum.engine.cluster import runtime
from quorum.engine.cluster.actors import LimiterService, TaskFn, WorkerService
from quorum.engine.cluster.spec import ConnectionSpec
from quorum.engine.cost import Cost
from quorum.engine.outcome import Outcome
from quorum.errors import ConfigError

DEFAULT_LEASE_S = 0.1
DEFAULT_LEASE_TTL_S = 1.0
START_TIMEOUT_S = 120.0
FINISH_TIMEOUT_S = 5.0
WINDOW_PER_CALL = 4  # items a worker holds per call it may have in flight


class RayExecutor:
    """Runs tasks on ``workers`` Ray actors, ``concurrency`` tasks in flight on each.

    ``address`` is the cluster (``host:port``, ``ray://host:port``, ``auto``); ``None``
    joins the Ray already started in this process or starts a local cluster.
    ``runtime_env`` is given to every actor (e.g. ``{"pip": ["quorum[ray]"]}``).
    ``lease_s`` sizes the limiter's leases (seconds of the account's rate) and
    ``lease_ttl_s`` says how long one may be held before it returns to the pool.
    """

    def __init__(
        self,
        address: str | None = None,
        *,
        workers: int = 2,
        concurrency: int = 16,
        runtime_env: dict[str, Any] | None = None,
        namespace: str = "quorum",
        lease_s: float = DEFAULT_LEASE_S,
        lease_ttl_s: float = DEFAULT_LEASE_TTL_S,
        burst_s: float = 0.5,
    ) -> None:
        for name, value in (("workers", workers), ("concurrency", concurrency)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"{name} must be a whole number of at least 1, got {value!r}")
        for name, seconds in (("lease_s", lease_s), ("lease_ttl_s", lease_ttl_s), ("burst_s", burst_s)):
            if not seconds > 0:
                raise ConfigError(f"{name} must be a positive number of seconds, got {seconds!r}")
        if address not in (None, "auto", "local"):
            runtime.check_address(address)
        runtime.import_ray()  # a missing extra is said here, before any work
        self.address = address
        self.workers = workers
        self.concurrency = concurrency
        self.runtime_env = runtime_env
        self.namespace = namespace
        self.lease_s = lease_s
        self.lease_ttl_s = lease_ttl_s
        self.burst_s = burst_s
        self._started_ray = False
        self._limiters: dict[str, Any] = {}
        self._owned: set[str] = set()

    def stream(
        self,
        items: Iterable[Any] | AsyncIterable[Any],
        *,
        llm: ConnectionSpec | str,
        fn: TaskFn | None = None,
        ids: Callable[[int, Any], str] | None = None,
        timeout: float | None = None,
    ) -> ClusterStream:
        """Outcomes of ``fn(connection, item)`` for every item, as they finish.

        ``fn`` must be importable by the workers (a module-level async function); without
        it each item is one call (a ``Request``, a prompt, or ``Request.of`` arguments as
        a mapping) and its value the ``Reply``. ``timeout`` is per task, in seconds."""
        spec = llm if isinstance(llm, ConnectionSpec) else ConnectionSpec(llm)
        return ClusterStream(self, items, spec, fn, ids, timeout)

    def check_address(self) -> None:
        """Fail fast, in one line, when nobody answers at ``address`` (a local cluster
        needs no check): before a job starts, rather than at its first call."""
        if self.address not in (None, "auto", "local"):
            runtime.probe(self.address)

    def limiter_stats(self, llm: ConnectionSpec) -> dict[str, Any]:
        """The account limiter's totals (leases, capacity granted and returned...)."""
        ray = runtime.import_ray()
        limiter = self._limiters.get(llm.account_name)
        if limiter is None:
            return {}
        stats: dict[str, Any] = ray.get(limiter.stats.remote())
        return stats

    def shutdown(self) -> None:
        """Stop the limiters this executor started, and Ray if it started it."""
        ray = runtime.import_ray()
        for name in self._owned:
            ray.kill(self._limiters[name])
        self._limiters.clear()
        self._owned.clear()
        if self._started_ray and ray.is_initialized():
            ray.shutdown()
        self._started_ray = False

    # -- used by ClusterStream ----------------------------------------------------------

    def _connect(self) -> Any:
        self._started_ray = runtime.start(self.address, self.namespace) or self._started_ray
        return runtime.import_ray()

    def _limiter(self, spec: ConnectionSpec) -> Any:
        if not spec.limited:
            return None
        if spec.account_name not in self._limiters:
            ray = runtime.import_ray()
            try:  # another driver's limiter for this account: share it, never stop it
                self._limiters[spec.account_name] = ray.get_actor(spec.account_name, namespace=self.namespace)
                return self._limiters[spec.account_name]
            except ValueError:
                self._owned.add(spec.account_name)
            actor = ray.remote(LimiterService).options(
                name=spec.account_name,
                namespace=self.namespace,
                get_if_exists=True,
                num_cpus=0,
                runtime_env=self.runtime_env,
                max_concurrency=10_000,
            )
            self._limiters[spec.account_name] = actor.remote(spec, self.lease_ttl_s, self.burst_s)
        return self._limiters[spec.account_name]

    def _chunk(self, spec: ConnectionSpec) -> Cost:
        """The most one lease may hold: ``lease_s`` of each limited rate (0: no cap)."""
        second = spec.per_second()
        return Cost(
            *(_share(n, self.lease_s) for n in (second.requests, second.input_tokens, second.output_tokens))
        )


@dataclass
class StreamStats:
    """What the driver saw: items re-sent after a worker died, outcomes dropped because
    another worker had already answered for the item, workers started in place of dead ones."""

    delivered: int = 0
    redispatched: int = 0
    duplicates_dropped: int = 0
    replaced_workers: int = 0
    by_worker: dict[str, int] = field(default_factory=dict)


@dataclass
class _Slot:
    """One worker place: the actor in it now and the items it holds (index -> (id, item))."""

    number: int
    name: str = ""
    handle: Any = None
    held: dict[int, tuple[str, Any]] = field(default_factory=dict)


class ClusterStream:
    """The outcomes of one ``RayExecutor.stream`` call; use with ``async with``."""

    def __init__(
        self,
        executor: RayExecutor,
        items: Iterable[Any] | AsyncIterable[Any],
        spec: ConnectionSpec,
        fn: TaskFn | None,
        ids: Callable[[int, Any], str] | None,
        timeout: float | None,
    ) -> None:
        self._x = executor
        self._items = _pull_from(items)
        self._spec = spec
        self._fn = fn
        self._ids = ids or (lambda index, _item: f"task_{index}")
        self._timeout = timeout
        self._window = WINDOW_PER_CALL * executor.concurrency
        self._slots = [_Slot(n) for n in range(executor.workers)]
        self._again: deque[tuple[int, str, Any]] = deque()
        # Items read ahead of the workers: a fill takes what is here without waiting once
        # its worker holds something, so a source that waits (the driver's own tasks) never
        # holds back a batch that is ready to go.
        self._ahead: asyncio.Queue[tuple[int, str, Any] | _End] = asyncio.Queue(maxsize=self._window)
        self._reader: asyncio.Task[None] | None = None
        self._pulled = 0
        self._exhausted = False
        self._changed = asyncio.Event()
        self._out: asyncio.Queue[Outcome[Any] | None] = asyncio.Queue(maxsize=executor.workers * self._window)
        self._names = itertools.count()
        self._pumps: list[asyncio.Task[None]] = []
        self._supervisor: asyncio.Task[None] | None = None
        self._crash: BaseException | None = None
        self._limiter: Any = None
        self.stats = StreamStats()

    async def __aenter__(self) -> ClusterStream:
        await self._start()
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    def __aiter__(self) -> AsyncIterator[Outcome[Any]]:
        return self

    async def __anext__(self) -> Outcome[Any]:
        if self._supervisor is None:
            await self._start()
        outcome = await self._out.get()
        if outcome is None:
            self._out.put_nowait(None)  # stays the end for any later call
            if self._crash is not None:
                raise self._crash
            raise StopAsyncIteration
        return outcome

    def worker_handles(self) -> list[Any]:
        """The Ray actor handles of the workers now running (to watch or to kill one)."""
        return [slot.handle for slot in self._slots if slot.handle is not None]

    # -- starting and stopping ---------------------------------------------------------

    async def _start(self) -> None:
        if self._supervisor is not None:
            return
        self._x._connect()
        self._limiter = self._x._limiter(self._spec)
        for slot in self._slots:
            self._launch(slot)
        try:
            await asyncio.gather(*(self._greet(slot) for slot in self._slots))
        except BaseException:
            await self.aclose()
            raise
        self._reader = asyncio.create_task(self._read_ahead())
        self._pumps = [asyncio.create_task(self._pump(slot)) for slot in self._slots]
        self._supervisor = asyncio.create_task(self._supervise())

    def _launch(self, slot: _Slot) -> None:
        ray = runtime.import_ray()
        slot.name = f"worker-{next(self._names)}"
        actor = ray.remote(WorkerService).options(
            num_cpus=0,
            runtime_env=self._x.runtime_env,
            scheduling_strategy="SPREAD",
            max_concurrency=4 * self._x.concurrency + 16,
        )
        chunk = self._x._chunk(self._spec)
        slot.handle = actor.remote(
            slot.name, self._spec, self._limiter, chunk, self._x.concurrency, self._fn, self._timeout
        )

    async def _greet(self, slot: _Slot) -> None:
        try:
            await asyncio.wait_for(slot.handle.hello.remote(), START_TIMEOUT_S)
        except Exception as exc:
            raise runtime.worker_start_error(exc, self._x.runtime_env) from exc

    async def aclose(self) -> None:
        """Stop the pumps, let live workers return their leases, and end the workers."""
        ray = runtime.import_ray()
        for pump in self._pumps:
            pump.cancel()
        if self._supervisor is not None:
            self._supervisor.cancel()
        if self._reader is not None:
            self._reader.cancel()
        others = [t for t in (self._supervisor, self._reader) if t is not None]
        await asyncio.gather(*self._pumps, *others, return_exceptions=True)
        handles = [slot.handle for slot in self._slots if slot.handle is not None]
        if handles and self._all_done():
            # Done: each worker returns its lease. Left early: the calls in flight are
            # abandoned with their workers, and the leases return when they expire.
            finishing = [asyncio.wait_for(h.finish.remote(), FINISH_TIMEOUT_S) for h in handles]
            await asyncio.gather(*finishing, return_exceptions=True)
        for handle in handles:
            ray.kill(handle)
        for slot in self._slots:
            slot.handle = None

    async def _supervise(self) -> None:
        try:
            await asyncio.gather(*self._pumps)
        except Exception as exc:
            self._crash = exc
        await self._out.put(None)

    # -- the per-worker loop -------------------------------------------------------------

    async def _pump(self, slot: _Slot) -> None:
        ray = runtime.import_ray()
        while True:
            try:
                batch = await self._fill(slot)
                if not slot.held:
                    if self._all_done():
                        return
                    self._changed.clear()
                    await self._changed.wait()
                    continue
                outcomes = await slot.handle.exchange.remote(batch)
            except ray.exceptions.RayActorError:
                await self._replace(slot)
                continue
            for outcome in outcomes:
                await self._deliver(slot, outcome)
            self._changed.set()

    async def _fill(self, slot: _Slot) -> list[tuple[int, Any]]:
        """Items for ``slot`` up to its window, marked as held by it: it waits for an item
        only while the worker holds none, then takes what is read ahead already."""
        batch: list[tuple[int, Any]] = []
        yielded = False
        while len(slot.held) < self._window:
            nxt = await self._next_item(wait=not slot.held)
            if nxt is None and not yielded and not self._exhausted:
                yielded = True
                await asyncio.sleep(0)  # let the reader top up once, then send what there is
                continue
            if nxt is None:
                break
            index, task_id, item = nxt
            slot.held[index] = (task_id, item)
            batch.append((index, item))
        return batch

    async def _next_item(self, *, wait: bool) -> tuple[int, str, Any] | None:
        if self._again:
            return self._again.popleft()
        if self._exhausted:
            return None
        if not wait and self._ahead.empty():
            return None
        nxt = await self._ahead.get()
        if isinstance(nxt, _End):
            self._ahead.put_nowait(nxt)  # the end stays for every other pump
            self._exhausted = True
            self._changed.set()
            if nxt.error is not None:
                raise nxt.error
            return None
        return nxt

    async def _read_ahead(self) -> None:
        """Pull the items (lazily: at most a window ahead) and name them."""
        try:
            async for item in self._items:
                index = self._pulled
                self._pulled += 1
                await self._ahead.put((index, self._ids(index, item), item))
        except Exception as exc:  # the source failed: the run ends with its error
            await self._ahead.put(_End(exc))
        else:
            await self._ahead.put(_End(None))

    def _all_done(self) -> bool:
        return self._exhausted and not self._again and not any(s.held for s in self._slots)

    async def _deliver(self, slot: _Slot, outcome: Outcome[Any]) -> None:
        index = int(outcome.id)
        held = slot.held.pop(index, None)
        if held is None:  # this item was answered for already: never deliver it twice
            self.stats.duplicates_dropped += 1
            return
        outcome.index, outcome.id = index, held[0]
        self.stats.delivered += 1
        self.stats.by_worker[slot.name] = self.stats.by_worker.get(slot.name, 0) + 1
        await self._out.put(outcome)

    async def _replace(self, slot: _Slot) -> None:
        """The worker died: its items go first in line again, and a new worker takes its place."""
        lost = sorted(slot.held.items(), reverse=True)
        for index, (task_id, item) in lost:
            self._again.appendleft((index, task_id, item))
        self.stats.redispatched += len(lost)
        slot.held.clear()
        self._changed.set()
        with suppress(Exception):  # unreachable but alive, it must not answer later
            runtime.import_ray().kill(slot.handle)
        self._launch(slot)
        await self._greet(slot)
        self.stats.replaced_workers += 1


@dataclass(frozen=True, slots=True)
class _End:
    """No more items (and why, when the source failed)."""

    error: BaseException | None


def _share(per_second: int, seconds: float) -> int:
    return max(1, int(per_second * seconds)) if per_second > 0 else 0


async def _pull_from(items: Iterable[Any] | AsyncIterable[Any]) -> AsyncIterator[Any]:
    if isinstance(items, AsyncIterable):
        async for item in items:
            yield item
    elif isinstance(items, Iterable):
        for item in items:
            yield item
    else:
        raise ConfigError(f"items must be an iterable or async iterable, got {type(items).__name__}")
