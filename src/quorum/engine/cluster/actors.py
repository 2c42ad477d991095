"""What runs inside the cluster: the account's limiter and the stateless workers.

Plain classes here; ``executor.py`` turns them into Ray actors with ``ray.remote`` when
it starts, so importing quorum never imports Ray. Both are async actors: the limiter
grants many leases concurrently (each waits its turn in the account's GCRA schedule),
and a worker runs quorum's own engine (``quorum.engine.stream``) over the items the
driver pushes to it, with calls through a ``Connection`` built from a ``ConnectionSpec``.
"""

from __future__ import annotations

import asyncio
import pickle
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import asdict, replace
from typing import Any

import quorum
from quorum.engine.cluster.lease import LeasedLimit
from quorum.engine.cluster.ledger import AccountLedger, Lease, Report
from quorum.engine.cluster.spec import ConnectionSpec
from quorum.engine.connection import Connection
from quorum.engine.cost import Cost
from quorum.engine.outcome import Outcome
from quorum.engine.runner import stream
from quorum.errors import ConfigError, QuorumError, describe
from quorum.llm.types import Reply, Request

TaskFn = Callable[[Connection, Any], Awaitable[Any]]
_END = object()
LINGER_S = 0.01  # how long an exchange may wait for more outcomes once it has one
LINGER_STEP_S = 0.002


async def complete(llm: Connection, item: Request | str | Mapping[str, Any]) -> Reply:
    """The default task: one call. ``item`` is a ``Request``, a prompt, or a mapping of
    ``Request.of`` arguments (``{"prompt": ..., "system": ..., "max_tokens": ...}``)."""
    if isinstance(item, str):
        request = Request.of(item)
    elif isinstance(item, Mapping):
        options = dict(item)
        request = Request.of(options.pop("prompt"), **options)
    elif isinstance(item, Request):
        request = item
    else:
        raise ConfigError(
            f"an item for the default task must be a Request, a prompt or a mapping, got {item!r}"
        )
    reply = await llm.complete(request)
    return replace(reply, raw=None)  # the SDK's response object stays here: it does not pickle


class LimiterService:
    """One account's limits for the whole cluster (a named actor: one per account)."""

    def __init__(self, spec: ConnectionSpec, ttl_s: float, burst_s: float) -> None:
        # A live worker stops spending a lease ttl_s after it received it; the grace covers
        # a slow answer on the way, so only a silent (dead) worker's lease is reaped.
        self.ledger = AccountLedger(spec.rates(burst_s=burst_s), ttl_s=ttl_s, grace_s=2 * ttl_s)

    async def lease(self, worker: str, want: Cost, report: Report | None) -> Lease:
        return await self.ledger.lease(worker, want, report)

    async def report(self, report: Report) -> None:
        self.ledger.take(report)

    async def stats(self) -> dict[str, Any]:
        self.ledger.reap()
        return {**asdict(self.ledger.stats), "open_leases": self.ledger.open_leases}


class ActorGrantor:
    """A worker's line to the limiter actor (``Grantor`` for ``LeasedLimit``)."""

    def __init__(self, limiter: Any) -> None:
        self.limiter = limiter

    async def lease(self, worker: str, want: Cost, report: Report | None) -> Lease:
        lease: Lease = await self.limiter.lease.remote(worker, want, report)
        return lease

    def report(self, report: Report) -> None:
        self.limiter.report.remote(report)  # fire and forget: nothing to wait for


class WorkerService:
    """Runs tasks pushed by the driver through quorum's engine; keeps no state of its own
    beyond the items in hand, so a dead worker loses nothing the driver cannot resend."""

    def __init__(
        self,
        name: str,
        spec: ConnectionSpec,
        limiter: Any,
        chunk: Cost,
        concurrency: int,
        fn: TaskFn | None,
        timeout: float | None,
    ) -> None:
        self.name = name
        self.spec = spec
        self.limiter = limiter
        self.chunk = chunk
        self.concurrency = concurrency
        self.fn: TaskFn = fn or complete
        self.timeout = timeout
        self._inbox: asyncio.Queue[Any] | None = None
        self._outbox: list[Outcome[Any]] = []
        self._ready: asyncio.Event | None = None
        self._serving: asyncio.Task[None] | None = None
        self._lease: LeasedLimit | None = None
        self._llm: Connection | None = None

    async def hello(self) -> str:
        """Proof that this worker imported quorum (and which version) and could build its
        connection: a worker without the provider's SDK fails here, at the start, and the
        SDK's import is not paid on the first items."""
        self._connection()
        return quorum.__version__

    async def exchange(self, batch: list[tuple[int, Any]]) -> list[Outcome[Any]]:
        """Take ``batch`` (``(index, item)`` pairs); return every outcome finished since the
        last exchange, waiting for at least one.

        One message each way per exchange, and after the first outcome it lingers a few
        milliseconds for more (or until half the calls in flight are done), so that under
        load one exchange carries many items: two messages per item would cost a worker
        about as much CPU as the calls themselves."""
        inbox = self._start()
        for pair in batch:
            inbox.put_nowait(pair)
        assert self._ready is not None
        assert self._serving is not None
        while not self._outbox:
            if self._serving.done():
                self._serving.result()  # a crash surfaces at the driver
                return []
            self._ready.clear()
            await self._ready.wait()
        lingered = 0.0
        while len(self._outbox) < self.concurrency // 2 and lingered < LINGER_S:
            await asyncio.sleep(LINGER_STEP_S)
            lingered += LINGER_STEP_S
        out, self._outbox = self._outbox, []
        return out

    async def finish(self) -> None:
        """No more items: finish those in hand, return the lease, close the connection."""
        inbox = self._start()
        inbox.put_nowait(_END)
        assert self._serving is not None
        await asyncio.wait({self._serving})
        if self._lease is not None:
            await self._lease.close()

    def _start(self) -> asyncio.Queue[Any]:
        if self._inbox is None:
            self._inbox = asyncio.Queue()
            self._ready = asyncio.Event()
            self._serving = asyncio.create_task(self._serve())
            self._serving.add_done_callback(lambda _t: self._ready.set() if self._ready else None)
        return self._inbox

    def _connection(self) -> Connection:
        if self._llm is None:
            extra = []
            if self.limiter is not None:
                self._lease = LeasedLimit(ActorGrantor(self.limiter), self.name, chunk=self.chunk)
                extra.append(self._lease)
            self._llm = self.spec.connect(extra)
        return self._llm

    async def _serve(self) -> None:
        async with self._connection() as llm:

            async def one(pair: tuple[int, Any]) -> Any:
                return await self.fn(llm, pair[1])

            async with stream(
                one, self._items(), concurrency=self.concurrency, ids=_index_id, timeout=self.timeout
            ) as outcomes:
                async for outcome in outcomes:
                    self._outbox.append(_portable(outcome))
                    assert self._ready is not None
                    self._ready.set()

    async def _items(self) -> AsyncIterator[tuple[int, Any]]:
        assert self._inbox is not None
        while (pair := await self._inbox.get()) is not _END:
            yield pair


def _index_id(_local: int, pair: tuple[int, Any]) -> str:
    """The driver's index travels as the outcome's id; the driver puts the real id back."""
    return str(pair[0])


def _portable(outcome: Outcome[Any]) -> Outcome[Any]:
    """The outcome, with an error that would not survive pickling replaced by its description."""
    if outcome.error is not None:
        try:
            pickle.loads(pickle.dumps(outcome.error))
        except Exception:
            outcome.error = QuorumError(describe(outcome.error))
    return outcome
