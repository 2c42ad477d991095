"""The engine: many tasks, a bounded number at a time, every outcome accounted for.

``run(fn, items)`` returns every outcome in input order; ``stream(fn, items)`` yields them
as they finish (or in order, with ``ordered=True``). Items come from any iterable or async
iterable and are pulled lazily, so a generator of millions costs memory for the tasks in
flight only. A fixed set of ``concurrency`` workers pulls and runs tasks: no task object
per item, no list of pending futures.

Structure: the stream owns its workers. Leaving ``async with stream(...)`` (normally, by
``break``, by an exception or by cancellation, Ctrl-C included) cancels the workers and
waits for them, so no task is left running and no connection is left open. ``run`` is a
stream consumed to the end.

After a stop (a policy, the deadline, a budget) the rest of a collection (anything with a
length) is reported skipped, one outcome per item; an iterator or generator is not pulled
any further, since it may never end.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Iterable, Iterator, Sized
from contextlib import suppress
from dataclasses import dataclass, replace
from types import TracebackType
from typing import Any, Generic, TypeVar

from quorum import errors
from quorum.engine.budget import Budget
from quorum.engine.clock import SYSTEM_CLOCK, Clock
from quorum.engine.context import Meter, Scope, current_meter, current_scope
from quorum.engine.events import Event, EventKind, EventSink
from quorum.engine.outcome import Outcome, RunResult, Status, Summary
from quorum.engine.policy import FailurePolicy, Policy, Quorum
from quorum.engine.retry import Retry, is_not_permanent

T = TypeVar("T")
R = TypeVar("R")

DEFAULT_CONCURRENCY = 16
CHAPTER_RETRY = Retry(attempts=3, base_delay=1.0, max_delay=30.0, retry_on=is_not_permanent)


@dataclass(frozen=True)
class Options:
    concurrency: int = DEFAULT_CONCURRENCY
    policy: Policy = FailurePolicy.IGNORE
    retry: Retry | None = None
    timeout: float | None = None  # per task
    deadline: float | None = None  # seconds for the whole run
    budget: Budget | None = None
    on_event: EventSink | None = None
    ids: Callable[[int, Any], str] | None = None
    clock: Clock = SYSTEM_CLOCK
    label: str = ""
    ordered: bool = False

    def __post_init__(self) -> None:
        if self.concurrency < 1:
            raise errors.ConfigError(f"concurrency must be at least 1, got {self.concurrency}")
        for name in ("timeout", "deadline"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise errors.ConfigError(f"{name} must be a positive number of seconds, got {value}")
        if not isinstance(self.policy, (FailurePolicy, Quorum)):
            raise errors.ConfigError(
                f"policy must be a FailurePolicy (IGNORE, FAIL_FAST, RETRY, REQUIRE_ALL) or "
                f"Quorum(k), got {self.policy!r}; e.g. policy=FailurePolicy.FAIL_FAST"
            )

    @property
    def task_retry(self) -> Retry | None:
        if self.retry is None and self.policy is FailurePolicy.RETRY:
            return CHAPTER_RETRY
        return self.retry


async def run(
    fn: Callable[[T], Awaitable[R]],
    items: Iterable[T] | AsyncIterable[T],
    /,
    **options: Any,
) -> RunResult[R]:
    """Run ``fn`` over every item; every outcome in input order, and the summary.

    Options: ``concurrency`` (tasks in flight, default 16), ``policy`` (a ``FailurePolicy``
    or ``Quorum(k)``), ``retry`` (a ``Retry`` for whole tasks; LLM calls are already retried
    by their ``Connection``), ``timeout`` (per task, seconds), ``deadline`` (whole run,
    seconds), ``budget`` (a ``Budget``), ``on_event`` (called with each ``Event``), ``ids``
    (``(index, item) -> str``), ``clock``, ``label``. Raises the policy's ``RunFailed``
    subclass when the policy gives up; its ``result`` holds every outcome.
    """
    outcomes: list[Outcome[R]] = []
    async with Stream(fn, items, replace(make_options(options), ordered=True), raise_policy=False) as flow:
        async for outcome in flow:
            outcomes.append(outcome)
    result = RunResult(outcomes, flow.summary)
    problem = flow.policy_error(result)
    if problem is not None:
        raise problem
    return result


def stream(
    fn: Callable[[T], Awaitable[R]],
    items: Iterable[T] | AsyncIterable[T],
    /,
    **options: Any,
) -> Stream[T, R]:
    """Outcomes as tasks finish (``ordered=True``: in input order). Use it as
    ``async with quorum.stream(fn, items) as outcomes: async for outcome in outcomes: ...``
    so that leaving the block early cancels what is still running. Same options as ``run``."""
    return Stream(fn, items, make_options(options))


def make_options(options: dict[str, Any]) -> Options:
    """``Options`` from keywords; an unknown keyword is an error that lists the known ones."""
    known = set(Options.__dataclass_fields__)
    unknown = sorted(set(options) - known)
    if unknown:
        raise errors.ConfigError(f"unknown run option(s) {unknown}; known: {sorted(known)}")
    return Options(**options)


class Stream(Generic[T, R]):
    """An iteration over a run's outcomes that owns the workers producing them."""

    def __init__(
        self,
        fn: Callable[[T], Awaitable[R]],
        items: Iterable[T] | AsyncIterable[T],
        options: Options,
        *,
        raise_policy: bool = True,
    ) -> None:
        self._fn = fn
        self._source = _Source(items)
        self._o = options
        self._raise_policy = raise_policy
        self.summary = Summary()
        self._outbox: asyncio.Queue[Outcome[R] | None] = asyncio.Queue()
        self._reorder: dict[int, Outcome[R]] = {}
        self._workers: list[asyncio.Task[None]] = []
        self._executing: set[asyncio.Task[Any]] = set()
        self._room = asyncio.Event()
        self._window = options.concurrency * (4 if options.ordered else 2)
        self._pulled = 0
        self._yielded = 0
        self._live = 0
        self._ok = 0
        self._stop: str | None = None
        self._first_failure: Outcome[R] | None = None
        self._failures: list[str] = []
        self._failure_count = 0
        self._closing = False
        self._finished = False
        self._crash: Exception | None = None
        self._started_at = 0.0
        self._scope = Scope()
        self._parent = current_meter.get()

    # -- lifecycle -----------------------------------------------------------------------

    async def __aenter__(self) -> Stream[T, R]:
        self._start()
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    def _start(self) -> None:
        if self._workers or self._closing:
            return
        outer = current_scope.get() or Scope()
        loop = asyncio.get_running_loop()
        deadline = outer.deadline
        if self._o.deadline is not None:
            own = loop.time() + self._o.deadline
            deadline = own if deadline is None else min(deadline, own)
        budgets = outer.budgets + ((self._o.budget,) if self._o.budget else ())
        label = "/".join(p for p in (outer.label, self._o.label) if p)
        self._scope = Scope(budgets, deadline, self._o.on_event or outer.sink, label)
        self._started_at = self._o.clock.now()
        self._live = self._o.concurrency
        self._workers = [asyncio.create_task(self._worker()) for _ in range(self._o.concurrency)]

    async def aclose(self) -> None:
        """Cancel whatever still runs and wait for it; close the source. Idempotent."""
        self._closing = True
        for worker in self._workers:
            worker.cancel()
        if self._workers:
            await asyncio.gather(*self._workers, return_exceptions=True)
        await self._source.aclose()
        self.summary.wall_s = self._o.clock.now() - self._started_at

    # -- consuming -----------------------------------------------------------------------

    def __aiter__(self) -> AsyncIterator[Outcome[R]]:
        return self

    async def __anext__(self) -> Outcome[R]:
        if self._finished:
            raise StopAsyncIteration
        self._start()
        while True:
            if self._o.ordered and self._yielded in self._reorder:
                return self._hand_out(self._reorder.pop(self._yielded))
            item = await self._outbox.get()
            if item is None:
                return await self._finish()
            if not self._o.ordered:
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
        return outcome

    async def _finish(self) -> Outcome[R]:
        self._finished = True
        await self.aclose()
        if self._crash is not None:
            raise self._crash
        problem = self.policy_error(self.summary) if self._raise_policy else None
        if problem is not None:
            raise problem
        raise StopAsyncIteration

    def policy_error(self, result: Any) -> errors.RunFailed | None:
        """The policy's verdict once everything ended, carrying ``result``."""
        policy = self._o.policy
        if policy is FailurePolicy.FAIL_FAST and self._first_failure is not None:
            first = self._first_failure
            err = errors.RunAborted(
                f"{first.id} failed ({first.error_message}); FAIL_FAST cancelled the calls in "
                f"flight and skipped the rest",
                result,
            )
            err.__cause__ = first.error
            return err
        if policy is FailurePolicy.REQUIRE_ALL and self._failures:
            listing = "; ".join(self._failures)
            return errors.IncompleteRun(f"{len(self._failures)} tasks failed: {listing}", result)
        if isinstance(policy, Quorum) and self._ok < policy.k:
            return errors.QuorumNotReached(
                f"only {self._ok} of the {policy.k} successes needed; "
                f"{self._failure_count} tasks failed: {'; '.join(self._failures)}",
                result,
            )
        return None

    # -- producing -----------------------------------------------------------------------

    async def _worker(self) -> None:
        try:
            while True:
                try:
                    pulled = await self._pull()
                except asyncio.CancelledError:
                    if self._closing:
                        raise
                    _uncancel()  # a policy stop landed between tasks: nothing to account
                    continue
                if pulled is None:
                    return
                index, item = pulled
                self._deliver(await self._run_one(index, item))
        except Exception as exc:  # a bug or a failing event sink: surface it, never hang
            self._crash = self._crash or exc
        finally:
            self._live -= 1
            if self._live == 0 and not self._closing:
                self._outbox.put_nowait(None)

    async def _pull(self) -> tuple[int, T] | None:
        while self._pulled - self._yielded >= self._window:
            self._room.clear()
            await self._room.wait()
        if self._stop is not None and not self._source.sized:
            return None  # an iterator may be endless: after a stop, pull nothing more
        pulled = await self._source.next()
        if pulled is None:
            return None
        index = self._pulled
        self._pulled += 1
        return index, pulled[0]

    def _deliver(self, outcome: Outcome[R]) -> None:
        self.summary.add(outcome)
        if outcome.ok:
            self._ok += 1
        elif outcome.status is not Status.SKIPPED and outcome.status is not Status.CANCELLED:
            self._failure_count += 1
            if self._keeps_failure():
                self._failures.append(f"{outcome.id}: {outcome.error_message}")
        self._apply_policy(outcome)
        self._outbox.put_nowait(outcome)

    def _keeps_failure(self) -> bool:
        """REQUIRE_ALL lists every failure; QUORUM quotes the first few; the others need
        none kept, so a long run of failures under IGNORE costs no memory."""
        policy = self._o.policy
        return policy is FailurePolicy.REQUIRE_ALL or (
            isinstance(policy, Quorum) and len(self._failures) < 10
        )

    async def _run_one(self, index: int, item: T) -> Outcome[R]:
        task_id = self._o.ids(index, item) if self._o.ids else f"task_{index}"
        outcome: Outcome[R] = Outcome(index, task_id, Status.SKIPPED, queued_at=self._o.clock.now())
        self._emit(EventKind.QUEUED, outcome)
        reason = self._stop or self._scope.exhausted() or self._deadline_passed()
        if reason:
            self._halt(reason, cancel_in_flight=False)
            _discard(item)
            self._emit(EventKind.FINISHED, outcome, status=str(outcome.status))
            return outcome
        meter = Meter(task_id, index, self._o.clock, self._scope, self._parent)
        outcome.started_at = self._o.clock.now()
        self._emit(EventKind.STARTED, outcome)
        await self._attempts(item, meter, outcome)
        outcome.finished_at = self._o.clock.now()
        outcome.usage, outcome.cost, outcome.calls = meter.usage, meter.known_cost, meter.calls
        outcome.call_s = meter.call_s
        outcome.attempts += meter.retries
        self._emit(
            EventKind.FINISHED,
            outcome,
            status=str(outcome.status),
            error=outcome.error_message if not outcome.ok else None,
        )
        return outcome

    async def _attempts(self, item: T, meter: Meter, outcome: Outcome[R]) -> None:
        """Run the task, retrying it if the run's ``retry`` says so; fill in ``outcome``."""
        me = asyncio.current_task()
        assert me is not None
        self._executing.add(me)
        scope_token, meter_token = current_scope.set(self._scope), current_meter.set(meter)
        try:
            await self._attempt_loop(item, meter, outcome)
        except asyncio.CancelledError:
            if self._closing:
                raise
            _uncancel()  # the policy stopped the run: this task is cancelled, not the worker
            outcome.status = Status.CANCELLED
            outcome.error = None
        finally:
            current_scope.reset(scope_token)
            current_meter.reset(meter_token)
            self._executing.discard(me)

    async def _attempt_loop(self, item: T, meter: Meter, outcome: Outcome[R]) -> None:
        retry, started = self._o.task_retry, self._o.clock.now()
        while True:
            outcome.attempts += 1
            error = await self._attempt(item, outcome)
            if error is None or (outcome.status is Status.TIMEOUT and self._deadline_passed()):
                return
            delay = retry.delay(outcome.attempts, error, self._o.clock.now() - started) if retry else None
            if delay is None:
                return
            meter.emit(EventKind.RETRY, attempt=outcome.attempts, delay=delay, error=errors.describe(error))
            await self._o.clock.sleep(delay)

    async def _attempt(self, item: T, outcome: Outcome[R]) -> BaseException | None:
        """One try. Sets status, value and error; returns the error (``None`` on success)."""
        try:
            async with asyncio.timeout(self._time_left()) as limit:
                outcome.value = await self._fn(item)
        except TimeoutError as exc:
            if not limit.expired():
                return self._failed(outcome, Status.ERROR, exc)
            return self._failed(outcome, Status.TIMEOUT, self._timeout_error())
        except Exception as exc:
            return self._failed(outcome, Status.ERROR, exc)
        outcome.status, outcome.error = Status.OK, None
        return None

    def _failed(self, outcome: Outcome[R], status: Status, exc: BaseException) -> BaseException:
        outcome.status, outcome.error, outcome.value = status, exc, None
        return exc

    # -- time, policy, events ------------------------------------------------------------

    def _time_left(self) -> float | None:
        deadline = self._scope.deadline
        left = None if deadline is None else deadline - asyncio.get_running_loop().time()
        if self._o.timeout is None:
            return left
        return self._o.timeout if left is None else min(self._o.timeout, left)

    def _deadline_passed(self) -> str | None:
        deadline = self._scope.deadline
        if deadline is not None and asyncio.get_running_loop().time() >= deadline:
            return "the run's deadline passed"
        return None

    def _timeout_error(self) -> errors.Timeout:
        if self._deadline_passed():
            self._halt("the run's deadline passed", cancel_in_flight=False)
            return errors.Timeout("the run's deadline passed while this task ran")
        return errors.Timeout(f"the task took longer than its {self._o.timeout}s timeout")

    def _apply_policy(self, outcome: Outcome[R]) -> None:
        policy = self._o.policy
        failed = outcome.status in (Status.ERROR, Status.TIMEOUT)
        if policy is FailurePolicy.FAIL_FAST and failed and self._first_failure is None:
            self._first_failure = outcome
            self._halt(f"FAIL_FAST: {outcome.id} failed", cancel_in_flight=True)
        elif isinstance(policy, Quorum) and outcome.ok and self._ok >= policy.k:
            self._halt(f"quorum of {policy.k} reached", cancel_in_flight=True)

    def _halt(self, reason: str, *, cancel_in_flight: bool) -> None:
        """Stop dispatching; optionally cancel the tasks running now (not the caller)."""
        if self._stop is None:
            self._stop = reason
            self.summary.stopped = reason
        if cancel_in_flight:
            me = asyncio.current_task()
            for task in list(self._executing):
                if task is not me:
                    task.cancel()

    def _emit(self, kind: EventKind, outcome: Outcome[R], **fields: Any) -> None:
        sink = self._scope.sink
        if sink is not None:
            at = self._o.clock.now()
            sink(Event(kind, outcome.id, outcome.index, at, self._scope.label, outcome=outcome, **fields))


class _Source(Generic[T]):
    """Lazy pulling from a sync or async iterable; one puller at a time."""

    def __init__(self, items: Iterable[T] | AsyncIterable[T]) -> None:
        self.sized = isinstance(items, Sized)
        self._sync: Iterator[T] | None = None
        self._async: AsyncIterator[T] | None = None
        if isinstance(items, AsyncIterable):
            self._async = aiter(items)
        elif isinstance(items, Iterable):
            self._sync = iter(items)
        else:
            raise errors.ConfigError(
                f"tasks must be an iterable or async iterable, got {type(items).__name__}"
            )
        self._lock = asyncio.Lock()
        self._done = False

    async def next(self) -> tuple[T] | None:
        """The next item in a 1-tuple (items may themselves be ``None``), or ``None``."""
        if self._done:
            return None
        if self._sync is not None:
            try:
                return (next(self._sync),)
            except StopIteration:
                self._done = True
                return None
        async with self._lock:
            try:
                return (await anext(self._async),)  # type: ignore[arg-type]
            except StopAsyncIteration:
                self._done = True
                return None

    async def aclose(self) -> None:
        self._done = True
        closer = getattr(self._async, "aclose", None)
        if closer is not None:
            with suppress(Exception):
                await closer()
        sync_close = getattr(self._sync, "close", None)
        if sync_close is not None:
            sync_close()


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
