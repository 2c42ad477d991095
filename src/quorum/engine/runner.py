"""The engine: many tasks, a bounded number at a time, every outcome accounted for.

``run(fn, items)`` returns every outcome in input order; ``stream(fn, items)`` yields them
as they finish (or in order, with ``ordered=True``). Items are pulled lazily from any
iterable or async iterable (``source.py``). Workers pull and run tasks (``tasks.py``); they
start as items arrive, up to ``concurrency``, so three items cost three workers whatever
the concurrency. No task object per item, no list of pending futures.

The run's settings are the ones in force (``settings.use``) with the keywords of the call
laid over them. The failure policy is an object the stream asks after each outcome and
once at the end (``policy.py``); the stream acts on its decisions.

Structure: the stream owns its workers. Leaving ``async with stream(...)`` (normally, by
``break``, by an exception or by cancellation, Ctrl-C included) cancels the workers and
waits for them, so no task is left running. A plain ``async for`` over a stream opens and
closes it the same way. ``run`` (``collect.py``) is a stream consumed to the end, sorted
at the end.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Iterable
from types import TracebackType
from typing import Any, Generic, NoReturn, TypeVar

from quorum import errors
from quorum.engine.budget import Budget
from quorum.engine.clock import SYSTEM_CLOCK, Clock
from quorum.engine.context import Scope, current_meter, current_scope
from quorum.engine.events import Event, EventKind, EventSink
from quorum.engine.outcome import Outcome, RunResult, Status, Summary
from quorum.engine.plan import Plan, make_plan
from quorum.engine.policy import Action, FailurePolicy, Policy, Tally
from quorum.engine.retry import Retry
from quorum.engine.source import Source, SourceFailed
from quorum.engine.tasks import TaskRunner

T = TypeVar("T")
R = TypeVar("R")

DEADLINE_PASSED = "the run's deadline passed"


def stream(
    fn: Callable[[T], Awaitable[R]],
    items: Iterable[T] | AsyncIterable[T],
    /,
    *,
    concurrency: int | None = None,
    policy: Policy = FailurePolicy.IGNORE,
    retry: Retry | None = None,
    timeout: float | None = None,
    deadline: float | None = None,
    budget: Budget | None = None,
    on_event: EventSink | None = None,
    ids: Callable[[int, T], str] | None = None,
    clock: Clock = SYSTEM_CLOCK,
    label: str = "",
    ordered: bool = False,
) -> Stream[T, R]:
    """Outcomes as tasks finish (``ordered=True``: in input order). Use it as
    ``async with quorum.stream(fn, items) as outcomes: async for outcome in outcomes: ...``
    so that leaving the block early cancels what is still running; a plain ``async for``
    does the same when it is left. Same options as ``run``. The policy's error, raised once
    the outcomes are handed out, carries a ``RunResult`` whose ``outcomes`` are empty (they
    were yielded) and whose ``summary`` counts them."""
    plan = make_plan(
        concurrency, policy, retry, timeout, deadline, budget, on_event, ids, clock, label, ordered
    )
    return Stream(fn, items, plan)


class Stream(Generic[T, R]):
    """An iteration over a run's outcomes that owns the workers producing them."""

    def __init__(
        self,
        fn: Callable[[T], Awaitable[R]],
        items: Iterable[T] | AsyncIterable[T],
        plan: Plan,
        *,
        keep: bool = False,
    ) -> None:
        self._fn = fn
        self._source = Source(items)
        self._plan = plan
        self._rules = plan.rules
        self._concurrency = plan.settings.concurrency
        self.summary = Summary()
        self._tally = Tally()
        self._kept: list[Outcome[R]] | None = [] if keep else None
        self._outbox: asyncio.Queue[Outcome[R] | None] = asyncio.Queue()
        self._reorder: dict[int, Outcome[R]] = {}
        self._workers: set[asyncio.Task[None]] = set()
        self._live = 0  # workers alive
        self._idle = 0  # workers not running a task
        self._room = asyncio.Event()
        self._window = self._concurrency * (4 if plan.ordered else 2)
        self._pulled = 0
        self._yielded = 0
        self._entered = False
        self._closed = False
        self._finished = False
        self._crash: BaseException | None = None
        self._started_at = 0.0
        self._scope = Scope()
        self._tasks: TaskRunner[T, R] | None = None

    # -- lifecycle -----------------------------------------------------------------------

    async def __aenter__(self) -> Stream[T, R]:
        self._entered = True
        if not self._closed and self._tasks is None:
            self._start()
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    def _start(self) -> None:
        parent = current_meter.get()
        now = asyncio.get_running_loop().time()
        self._scope = self._plan.scope_in(current_scope.get() or Scope(), parent, now)
        self._tasks = TaskRunner(
            self._fn,
            timeout=self._plan.settings.timeout,
            retry=self._plan.retry,
            clock=self._plan.clock,
            scope=self._scope,
            parent=parent,
        )
        self._started_at = self._plan.clock.now()
        self._spawn()

    def _spawn(self) -> None:
        self._live += 1
        self._idle += 1
        self._workers.add(asyncio.create_task(self._worker()))

    async def aclose(self) -> None:
        """Cancel whatever still runs and wait for it; close the source. Idempotent."""
        self._closed = True
        if self._tasks is not None:
            self._tasks.closing = True
        for worker in self._workers:
            worker.cancel()
        if self._workers:
            await asyncio.gather(*self._workers, return_exceptions=True)
        await self._source.aclose()
        if self._tasks is not None:
            self.summary.wall_s = self._plan.clock.now() - self._started_at

    def result(self) -> RunResult[R]:
        """The outcomes kept (``run`` keeps them all; a stream none), in input order."""
        kept = sorted(self._kept, key=lambda o: o.index) if self._kept is not None else []
        return RunResult(kept, self.summary)

    # -- consuming -----------------------------------------------------------------------

    def __aiter__(self) -> AsyncIterator[Outcome[R]]:
        return self if self._entered else self._owned()

    async def _owned(self) -> AsyncIterator[Outcome[R]]:
        """A plain ``async for`` without ``async with``: opened here, and closed when the
        loop ends or is left (``break`` drops this generator, whose closing closes the
        stream)."""
        async with self:
            async for outcome in self:
                yield outcome

    async def __anext__(self) -> Outcome[R]:
        if self._finished or self._closed:
            raise StopAsyncIteration
        if not self._entered:
            raise RuntimeError(
                "a stream is read inside `async with quorum.stream(...) as outcomes:` or "
                "with `async for`, which close it when left; not with anext() alone"
            )
        while True:
            if self._plan.ordered and self._yielded in self._reorder:
                return self._hand_out(self._reorder.pop(self._yielded))
            item = await self._outbox.get()
            if item is None:
                await self._finish()
            if not self._plan.ordered:
                return self._hand_out(item)
            self._reorder[item.index] = item

    def ready(self) -> list[Outcome[R]]:
        """Outcomes that have finished but were not handed out yet, without waiting.

        A consumer that stops early (an adaptive vote that is settled) takes these
        before leaving, so answers that already came back are counted, not dropped."""
        ready = [self._hand_out(o) for _i, o in sorted(self._reorder.items())]
        self._reorder.clear()
        while not self._outbox.empty():
            item = self._outbox.get_nowait()
            if item is None:
                self._outbox.put_nowait(None)  # the end marker stays for __anext__
                break
            ready.append(self._hand_out(item))
        return ready

    def _hand_out(self, outcome: Outcome[R]) -> Outcome[R]:
        self._yielded += 1
        self._room.set()
        if self._kept is not None:
            self._kept.append(outcome)
        return outcome

    async def _finish(self) -> NoReturn:
        self._finished = True
        await self.aclose()
        crash = self._crash
        if isinstance(crash, SourceFailed):
            raise errors.RunFailed(
                f"the items' source failed after {self._pulled} items ({crash}); the result "
                f"holds the outcomes of those",
                self.result(),
            ) from crash.__cause__
        if crash is not None:
            raise crash
        problem = self._rules.verdict(self._tally, self.result())
        if problem is not None:
            raise problem
        raise StopAsyncIteration

    # -- producing -----------------------------------------------------------------------

    async def _worker(self) -> None:
        try:
            while (pulled := await self._pull()) is not None:
                self._idle -= 1
                if self._idle == 0 and len(self._workers) < self._concurrency and not self._closed:
                    self._spawn()  # every worker is busy and items are coming: one more
                self._deliver(await self._run_one(*pulled))
                self._idle += 1
        except (asyncio.CancelledError, KeyboardInterrupt, SystemExit):
            raise
        except BaseException as exc:  # kept and raised to the consumer, never lost
            self._crashed(exc)
        finally:
            self._live -= 1
            if self._live == 0 and not self._closed:
                self._outbox.put_nowait(None)

    async def _pull(self) -> tuple[int, T] | None:
        while self._pulled - self._yielded >= self._window:
            self._room.clear()
            try:
                await self._room.wait()
            except asyncio.CancelledError:
                if self._closed:
                    raise
                _uncancel()  # a policy stop landed between tasks: nothing to account
        if self._crash is not None or (self._tally.stopped is not None and not self._source.sized):
            return None  # an iterator may be endless: after a stop, pull nothing more
        pulled = await self._source.next()
        if pulled is None:
            return None
        index = self._pulled
        self._pulled += 1
        return index, pulled[0]

    async def _run_one(self, index: int, item: T) -> Outcome[R]:
        tasks, plan, now = self._tasks, self._plan, self._plan.clock.now
        assert tasks is not None
        task_id = plan.ids(index, item) if plan.ids else f"task_{index}"
        outcome: Outcome[R] = Outcome(index, task_id, Status.SKIPPED, queued_at=now())
        self._emit(EventKind.QUEUED, outcome)
        reason = self._tally.stopped or self._scope.exhausted() or self._deadline_passed()
        if reason:
            self._stop(reason, cancel_in_flight=False)
            _discard(item)
        else:
            outcome.started_at = now()
            self._emit(EventKind.STARTED, outcome)
            await tasks.execute(item, outcome)
            if outcome.status is Status.TIMEOUT and self._deadline_passed():
                self._stop(DEADLINE_PASSED, cancel_in_flight=False)
        error = outcome.error_message if not outcome.ok and outcome.status is not Status.SKIPPED else None
        self._emit(EventKind.FINISHED, outcome, status=str(outcome.status), error=error)
        return outcome

    def _deliver(self, outcome: Outcome[R]) -> None:
        self.summary.add(outcome)
        self._tally.count(outcome, keep=self._rules.keeps_failures(self._tally))
        decision = self._rules.decide(outcome, self._tally)
        if decision.action is not Action.CONTINUE:
            self._stop(decision.reason, cancel_in_flight=decision.action is Action.CANCEL)
        self._outbox.put_nowait(outcome)

    def _crashed(self, exc: BaseException) -> None:
        """A worker cannot go on: the source failed (the calls in flight are paid for, so
        they finish), or the task function or an event sink raised something that is not
        an ``Exception`` (everything in flight is cancelled). Raised to the consumer."""
        self._crash = self._crash or exc
        source = isinstance(exc, SourceFailed)
        self._stop(f"stopped: {errors.describe(exc)}", cancel_in_flight=not source)

    # -- time, stops, events -------------------------------------------------------------

    def _deadline_passed(self) -> str | None:
        tasks = self._tasks
        return DEADLINE_PASSED if tasks is not None and tasks.deadline_passed() else None

    def _stop(self, reason: str, *, cancel_in_flight: bool) -> None:
        """Stop dispatching; optionally cancel the tasks running now (not the caller)."""
        if self._tally.stopped is None:
            self._tally.stopped = self.summary.stopped = reason
        if cancel_in_flight and self._tasks is not None:
            me = asyncio.current_task()
            for task in list(self._tasks.executing):
                if task is not me:
                    task.cancel()

    def _emit(self, kind: EventKind, outcome: Outcome[R], **fields: Any) -> None:
        sink = self._scope.sink
        if sink is not None:
            at = self._plan.clock.now()
            sink(Event(kind, outcome.id, outcome.index, at, self._scope.label, outcome=outcome, **fields))


def _uncancel() -> None:
    task = asyncio.current_task()
    if task is not None:
        task.uncancel()


def _discard(item: object) -> None:
    """A skipped item that is a coroutine is closed, so Python does not warn it was
    never awaited."""
    close = getattr(item, "close", None)
    if asyncio.iscoroutine(item) and close is not None:
        close()
