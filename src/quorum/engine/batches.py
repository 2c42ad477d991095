"""The batch driver: a job's requests through a provider batch API, crash-safe.

``BatchRunner.run(items)`` groups the items not yet finished into batches under the
provider's limits and follows each batch to its end: intent journaled, ``create``, id
journaled, polls backing off to ``poll_s`` (a minute by default), results joined by
``custom_id`` and journaled once each. Items that errored for a passing reason or expired
go out again in a smaller batch (at most ``max_rounds`` batches per item) while the job's
``time_limit_s`` allows, or online through ``fallback`` once batches are spent.

Kills: every step is committed in the ``BatchLedger`` before the next begins, so a re-run
of the same job resumes. An intent with a batch id is followed again (never created
again); an intent without one is looked up at the provider first (the orphan of a kill
between ``create`` and its bookkeeping) and only created when none is found; results
already journaled are skipped when a download is read again.

Stops: ``BatchStop.request()`` (the first Ctrl-C) detaches: the driver finishes the step
it is in, leaves the batches running at the provider and returns; the second request
also cancels the remote batches it follows.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from quorum import errors
from quorum.engine.batch_ledger import BatchLedger, OpenIntent
from quorum.engine.clock import SYSTEM_CLOCK, Clock
from quorum.llm.batches.base import (
    BatchApi,
    BatchCounts,
    BatchItem,
    BatchStatus,
    Intent,
    ItemResult,
    group,
)
from quorum.llm.types import Reply, Request, Usage

Record = dict[str, object]
Fallback = Callable[[Request], Awaitable[Reply]]
CREATE_ATTEMPTS = 3
DOWNLOAD_ATTEMPTS = 5
log = logging.getLogger(__name__)
COMMIT_EVERY = 500  # results journaled per commit while a download is read


@dataclass(frozen=True, slots=True)
class BatchView:
    """One batch as the progress display shows it."""

    tag: str
    batch_id: str | None
    state: str
    counts: BatchCounts
    age_s: float  # since submission (wall clock)


@dataclass
class BatchReport:
    """What one ``run`` did. ``from_journal`` items were finished by an earlier run;
    ``resubmitted`` counts items sent in a batch again; ``detached`` means a stop left
    the batches in ``open_batches`` running at the provider (run again to resume)."""

    items: int = 0
    from_journal: int = 0
    succeeded: int = 0
    failed: int = 0
    batches_created: int = 0
    batches_adopted: int = 0
    resubmitted: int = 0
    online: int = 0
    cost: float = 0.0
    detached: bool = False
    open_batches: list[str] = field(default_factory=list)


class BatchStop:
    """The Ctrl-C switch: the first ``request`` detaches, the second also cancels."""

    def __init__(self) -> None:
        self.requests = 0
        self._first, self._second = asyncio.Event(), asyncio.Event()

    def request(self) -> str:
        self.requests += 1
        (self._first if self.requests == 1 else self._second).set()
        return "detach" if self.requests == 1 else "cancel"

    @property
    def detaching(self) -> bool:
        return self.requests >= 1

    @property
    def cancelling(self) -> bool:
        return self.requests >= 2

    async def wait(self) -> None:
        await self._first.wait()

    async def wait_for_cancel(self, seconds: float) -> bool:
        """Whether a second request comes within ``seconds`` (the window after a detach)."""
        try:
            await asyncio.wait_for(self._second.wait(), seconds)
        except TimeoutError:
            return False
        return True


@dataclass
class _Open:
    intent: Intent
    items: list[BatchItem]
    status: BatchStatus


class BatchRunner:
    """One job (``ledger.job_id``) through one provider's batch API (``api``)."""

    def __init__(
        self,
        api: BatchApi,
        ledger: BatchLedger,
        *,
        clock: Clock = SYSTEM_CLOCK,
        wall: Callable[[], float] = time.time,
        poll_s: float = 60.0,
        first_poll_s: float = 5.0,
        max_rounds: int = 3,
        fallback: Fallback | None = None,
        fallback_concurrency: int = 8,
        time_limit_s: float | None = None,
        store: Callable[[Request, Reply], None] | None = None,
        on_result: Callable[[Record], None] | None = None,
        on_progress: Callable[[list[BatchView]], None] | None = None,
        stop: BatchStop | None = None,
        commit_every: int = COMMIT_EVERY,
    ) -> None:
        if poll_s <= 0 or first_poll_s <= 0 or max_rounds < 1 or fallback_concurrency < 1:
            raise errors.ConfigError(
                "poll_s and first_poll_s must be > 0, max_rounds and fallback_concurrency >= 1"
            )
        self.api, self.ledger = api, ledger
        self.clock, self.wall = clock, wall
        self.poll_s, self.first_poll_s, self.max_rounds = poll_s, first_poll_s, max_rounds
        self.fallback, self.fallback_concurrency = fallback, fallback_concurrency
        self.time_limit_s = time_limit_s
        self.store, self.on_result, self.on_progress = store, on_result, on_progress
        self.stop = stop or BatchStop()
        self.commit_every = max(1, commit_every)
        self._views: dict[str, BatchView] = {}
        self._items: dict[str, BatchItem] = {}
        self._report = BatchReport()
        self._started = 0.0

    async def run(self, items: Sequence[BatchItem]) -> BatchReport:
        self._items = _index(items)
        self._report = BatchReport(items=len(self._items))
        self._report.from_journal = len(self.ledger.finished() & self._items.keys())
        self._started = self.clock.now()
        await self._follow_all([await self._resume(known) for known in self.ledger.open_intents()])
        while not self.stop.detaching:
            pending = [i for i in self._items.values() if i.custom_id not in self._busy_or_done()]
            if not pending:
                break
            sendable = await self._settle_spent(pending)
            if not sendable:
                break
            self._report.resubmitted += sum(1 for i in sendable if self.ledger.attempts(i.custom_id))
            opened = []
            for chunk in group(sendable, self.api.limits, self.api.item_size):
                opened.append(await self._submit(chunk))
                if self.stop.detaching:
                    break
            await self._follow_all(opened)
        self._report.open_batches = [o.batch_id or o.intent.tag for o in self.ledger.open_intents()]
        self._report.detached = bool(self._report.open_batches) and self.stop.detaching
        return self._report

    async def cancel_open(self) -> list[str]:
        """Cancel every batch of this job still open at the provider (a second Ctrl-C after
        a detach); their answers so far are collected by the next run."""
        cancelled = []
        for known in self.ledger.open_intents():
            if known.batch_id is not None:
                await self.api.cancel(known.batch_id)
                cancelled.append(known.batch_id)
        return cancelled

    # --- submitting -------------------------------------------------------------------

    async def _submit(self, chunk: list[BatchItem]) -> _Open:
        tag = f"{self.ledger.job_id}.{self.ledger.intents_written() + 1}"
        intent = Intent(self.ledger.job_id, tag, tuple(i.custom_id for i in chunk), self.wall())
        self.ledger.write_intent(intent, self.api.name)  # before create: a kill leaves a trace
        status = await self._create(intent, chunk, look_first=False)
        return _Open(intent, chunk, status)

    async def _resume(self, known: OpenIntent) -> _Open:
        chunk = [self._item_of(cid, known.intent.tag) for cid in known.intent.custom_ids]
        if known.batch_id is not None:
            return _Open(known.intent, chunk, await self.api.retrieve(known.batch_id))
        return _Open(known.intent, chunk, await self._create(known.intent, chunk, look_first=True))

    async def _create(self, intent: Intent, chunk: list[BatchItem], *, look_first: bool) -> BatchStatus:
        """The intent's batch: found again if it may exist, else created; its id journaled.

        A failed ``create`` may still have created the batch (the answer was lost), so
        every retry looks for it first: that is what keeps a batch from being paid twice."""
        for attempt in itertools.count(1):
            if look_first:
                found = await self.api.find(intent, self.ledger.claimed())
                if found is not None:
                    self.ledger.record_batch(intent.tag, found.id)
                    self._report.batches_adopted += 1
                    return found
            try:
                status = await self.api.create(intent, chunk)
            except errors.TransientError:
                if attempt >= CREATE_ATTEMPTS:
                    raise
                await self.clock.sleep(self.first_poll_s * attempt)
                look_first = True
                continue
            self.ledger.record_batch(intent.tag, status.id)  # right after create
            self._report.batches_created += 1
            return status
        raise AssertionError("unreachable")

    # --- following --------------------------------------------------------------------

    async def _follow_all(self, opened: list[_Open]) -> None:
        await _all(self._follow(o) for o in opened)

    async def _follow(self, batch: _Open) -> None:
        delay, cancel_sent = self.first_poll_s, False
        self._show(batch)
        while not batch.status.ended:
            if self.stop.cancelling:
                await self.api.cancel(batch.status.id)
                return  # the re-run collects what the batch answered before it stopped
            if self.stop.detaching:
                return
            if self._out_of_time() and not cancel_sent:
                batch.status, cancel_sent = await self.api.cancel(batch.status.id), True
                continue
            await self._nap(delay)
            if self.stop.detaching:
                continue
            delay = min(delay * 2, self.poll_s)
            try:
                batch.status = await self.api.retrieve(batch.status.id)
            except errors.TransientError as exc:
                log.warning("batch %s: polling failed (%s); trying again", batch.status.id, exc)
                continue
            self._show(batch)
        await self._download(batch)

    async def _download(self, batch: _Open) -> None:
        """Read the results; a passing failure reads them again (journaled ones are skipped)."""
        for attempt in itertools.count(1):
            try:
                await self._collect(batch)
                return
            except errors.TransientError as exc:
                if attempt >= DOWNLOAD_ATTEMPTS:
                    raise
                log.warning("batch %s: reading results failed (%s); reading again", batch.status.id, exc)
                await self._nap(self.first_poll_s * attempt)

    async def _collect(self, batch: _Open) -> None:
        retry: list[str] = []
        done: list[_Done] = []
        async for result in self.api.results(batch.status.id, batch.items):
            if result.kind == "succeeded" and result.reply is not None:
                done.append(_answered(self._items[result.custom_id], result.reply, "batch"))
            elif _retryable(result):
                retry.append(result.custom_id)
            else:
                done.append(_failed(result.custom_id, result.error, "batch"))
            if len(done) >= self.commit_every:
                self._finish(done)
                done = []
        self._finish(done)
        self.ledger.close_intent(batch.intent.tag, retry)
        self._views.pop(batch.intent.tag, None)

    async def _nap(self, seconds: float) -> None:
        """Sleep on the clock, waking early when a stop is requested."""
        sleeper = asyncio.ensure_future(self.clock.sleep(seconds))
        stopper = asyncio.ensure_future(self.stop.wait())
        try:
            await asyncio.wait({sleeper, stopper}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (sleeper, stopper):
                task.cancel()

    def _show(self, batch: _Open) -> None:
        view = BatchView(
            batch.intent.tag,
            batch.status.id,
            batch.status.state,
            batch.status.counts,
            max(0.0, self.wall() - batch.status.created_at),
        )
        self._views[batch.intent.tag] = view
        if self.on_progress is not None:
            self.on_progress(list(self._views.values()))

    # --- items that batches could not answer -------------------------------------------

    async def _settle_spent(self, pending: list[BatchItem]) -> list[BatchItem]:
        """The items that may go out in a batch again; the rest run online or fail."""
        if self._out_of_time():
            spent, sendable = pending, []
            why = f"the job's time limit ({self.time_limit_s:g} s) passed before a batch answered it"
        else:
            spent = [i for i in pending if self.ledger.attempts(i.custom_id) >= self.max_rounds]
            sendable = [i for i in pending if self.ledger.attempts(i.custom_id) < self.max_rounds]
            why = f"no batch answered it in {self.max_rounds} tries (errored or expired)"
        if spent and self.fallback is not None:
            await self._online(spent)
        else:
            advice = "; run again later, or with --fallback-online to finish it online"
            self._finish([_failed(i.custom_id, errors.Timeout(why + advice), "batch") for i in spent])
        return sendable

    async def _online(self, spent: list[BatchItem]) -> None:
        fallback = self.fallback
        assert fallback is not None
        gate = asyncio.Semaphore(self.fallback_concurrency)

        async def one(item: BatchItem) -> None:
            async with gate:
                try:
                    reply = await fallback(item.request)
                except errors.QuorumError as exc:
                    self._finish([_failed(item.custom_id, exc, "online")])
                    return
            self._finish([_answered(item, reply, "online")])
            self._report.online += 1

        await _all(one(item) for item in spent)

    # --- results ------------------------------------------------------------------------

    def _finish(self, done: list[_Done]) -> None:
        """Journal final results in one commit; only those new to the journal count, fill
        the cache and reach ``on_result`` (a download read again after a kill adds nothing)."""
        if not done:
            return
        rows = [(d.record["custom_id"], d.reply is not None, d.record) for d in done]
        new = self.ledger.record_results(rows)
        for entry in done:
            if entry.record["custom_id"] not in new:
                continue
            if entry.reply is not None:
                self._report.succeeded += 1
                self._report.cost += entry.reply.cost or 0.0
                if self.store is not None and entry.request is not None:
                    self.store(entry.request, entry.reply)
            else:
                self._report.failed += 1
            if self.on_result is not None:
                self.on_result(entry.record)

    # --- bookkeeping --------------------------------------------------------------------

    def _busy_or_done(self) -> set[str]:
        busy = {cid for known in self.ledger.open_intents() for cid in known.intent.custom_ids}
        return busy | self.ledger.finished()

    def _out_of_time(self) -> bool:
        limit = self.time_limit_s
        return limit is not None and self.clock.now() - self._started >= limit

    def _item_of(self, custom_id: str, tag: str) -> BatchItem:
        if custom_id not in self._items:
            raise errors.ConfigError(
                f"the journal's batch {tag} holds custom_id {custom_id!r}, which is not in the input: "
                "the input changed under its journal; run with the original input, or with a new journal"
            )
        return self._items[custom_id]


async def _all(calls: Iterable[Coroutine[Any, Any, None]]) -> None:
    """Run the calls together; the first failure cancels the others and is raised as itself."""
    try:
        async with asyncio.TaskGroup() as group:
            for call in calls:
                group.create_task(call)
    except BaseExceptionGroup as failed:
        raise failed.exceptions[0] from None


@dataclass(frozen=True, slots=True)
class _Done:
    record: Record
    request: Request | None = None
    reply: Reply | None = None


def _answered(item: BatchItem, reply: Reply, via: str) -> _Done:
    record: Record = {
        "custom_id": item.custom_id,
        "status": "ok",
        "text": reply.text,
        "data": reply.data,
        "usage": reply.usage.as_json(),
        "cost": reply.cost,
        "model": reply.model,
        "error": None,
        "via": via,
    }
    return _Done(record, item.request, reply)


def _failed(custom_id: str, error: BaseException | None, via: str) -> _Done:
    usage = getattr(error, "usage", None)  # an answer that broke its schema was billed
    record: Record = {
        "custom_id": custom_id,
        "status": "error",
        "text": getattr(error, "text", None),  # what it answered: an app may read it as text
        "data": None,
        "usage": usage.as_json() if isinstance(usage, Usage) else None,
        "cost": getattr(error, "cost", None),
        "model": None,
        "error": {"type": type(error).__name__, "message": str(error)},
        "via": via,
    }
    return _Done(record)


def _index(items: Sequence[BatchItem]) -> dict[str, BatchItem]:
    indexed: dict[str, BatchItem] = {}
    for item in items:
        if item.custom_id in indexed:
            raise errors.ConfigError(
                f"custom_id {item.custom_id!r} appears twice in the input; each item needs its own id"
            )
        indexed[item.custom_id] = item
    return indexed


def _retryable(result: ItemResult) -> bool:
    return result.kind in ("expired", "canceled") or isinstance(result.error, errors.TransientError)


async def run_batches(
    requests: Mapping[str, Request],
    *,
    model: str,
    journal: str | Path,
    fallback_online: bool = False,
    time_limit_s: float | None = None,
    on_progress: Callable[[list[BatchView]], None] | None = None,
    stop: BatchStop | None = None,
    **options: Any,
) -> dict[str, Record]:
    """The library switch: ``requests`` (by custom_id) through ``model``'s batch API, at half
    the price; the results by custom_id. ``journal`` is the job's file: run the same call
    again after a kill or a stop and it resumes. ``fallback_online`` answers what batches
    could not through ``quorum.connect(model)``. ``options`` go to the provider."""
    from quorum.engine.connection import connect
    from quorum.llm.batches import batches_for

    api = batches_for(model, **options)
    online = connect(model, **options) if fallback_online else None
    items = [BatchItem(custom_id, request) for custom_id, request in requests.items()]
    try:
        with BatchLedger(journal) as ledger:
            runner = BatchRunner(
                api,
                ledger,
                fallback=online.complete if online is not None else None,
                time_limit_s=time_limit_s,
                on_progress=on_progress,
                stop=stop,
            )
            await runner.run(items)
            return ledger.results([item.custom_id for item in items])
    finally:
        await api.aclose()
        if online is not None:
            await online.aclose()
