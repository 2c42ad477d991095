"""One task from start to end: its time limit, its retries, its account.

A task's ``timeout`` spans all its tries: it is set once, when the task starts, as the
task's own end (``Meter.deadline``), so a call's retry inside the task and a retry of the
whole task both stop where the task must end. A retry is made only if it can start before
the sooner of that end and the run's deadline; otherwise the last failure is the outcome.
A task that times out keeps the last failed call's error as the ``Timeout``'s cause.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, Generic, TypeVar

from quorum import errors
from quorum.engine.clock import Clock
from quorum.engine.context import Meter, Scope, current_meter, current_scope
from quorum.engine.events import EventKind
from quorum.engine.outcome import Outcome, Status
from quorum.engine.retry import Retry

T = TypeVar("T")
R = TypeVar("R")


class TaskRunner(Generic[T, R]):
    """Runs ``fn`` on one item at a time for a run, filling in its ``Outcome``."""

    def __init__(
        self,
        fn: Callable[[T], Awaitable[R]],
        *,
        timeout: float | None,
        retry: Retry | None,
        clock: Clock,
        scope: Scope,
        parent: Meter | None,
    ) -> None:
        self.fn = fn
        self.timeout = timeout
        self.retry = retry
        self.clock = clock
        self.scope = scope
        self.parent = parent
        self.executing: set[asyncio.Task[Any]] = set()  # what a CANCEL decision cancels
        self.closing = False  # the stream is closing: a cancellation is the caller's, not ours

    async def execute(self, item: T, outcome: Outcome[R]) -> None:
        """Run the task, retried as the run says; fill in ``outcome``'s status, value,
        error, times and account. A policy's cancellation ends it as CANCELLED; the
        stream's own closing is passed on."""
        meter = Meter(outcome.id, outcome.index, self.clock, self.scope, self.parent)
        if self.timeout is not None:
            meter.deadline = asyncio.get_running_loop().time() + self.timeout
        me = asyncio.current_task()
        assert me is not None
        self.executing.add(me)
        scope_token, meter_token = current_scope.set(self.scope), current_meter.set(meter)
        try:
            await self._tries(item, meter, outcome)
        except asyncio.CancelledError:
            if self.closing:
                raise
            me.uncancel()  # the policy stopped the run: this task is cancelled, not the worker
            outcome.status, outcome.error, outcome.value = Status.CANCELLED, None, None
        finally:
            current_scope.reset(scope_token)
            current_meter.reset(meter_token)
            self.executing.discard(me)
            outcome.finished_at = self.clock.now()
            outcome.usage, outcome.cost, outcome.calls = meter.usage, meter.known_cost, meter.calls
            outcome.call_s = meter.call_s
            outcome.attempts += meter.retries

    async def _tries(self, item: T, meter: Meter, outcome: Outcome[R]) -> None:
        started = self.clock.now()
        while True:
            outcome.attempts += 1
            error = await self._try(item, meter, outcome)
            if error is None or outcome.status is Status.TIMEOUT:
                return  # a timeout is the task's or the run's end: nothing can follow it
            delay = self._retry_delay(outcome.attempts, error, self.clock.now() - started, meter)
            if delay is None:
                return
            meter.emit(EventKind.RETRY, attempt=outcome.attempts, delay=delay, error=errors.describe(error))
            await self.clock.sleep(delay)

    def _retry_delay(self, attempt: int, error: BaseException, elapsed: float, meter: Meter) -> float | None:
        """The wait before the next try, or ``None`` when none should be made: the retry
        says no, or the try could not start before the task's or the run's end."""
        if self.retry is None:
            return None
        delay = self.retry.delay(attempt, error, elapsed)
        left = self._time_left(meter)
        if delay is None or (left is not None and delay >= left):
            return None
        return delay

    async def _try(self, item: T, meter: Meter, outcome: Outcome[R]) -> BaseException | None:
        """One try. Sets status, value and error; returns the error (``None`` on success)."""
        left = self._time_left(meter)
        if left is None:  # nothing bounds it: spare the timer
            try:
                outcome.value = await self.fn(item)
            except Exception as exc:
                return _failed(outcome, Status.ERROR, exc)
            outcome.status, outcome.error = Status.OK, None
            return None
        try:
            async with asyncio.timeout(left) as limit:
                outcome.value = await self.fn(item)
        except TimeoutError as exc:
            if not limit.expired():
                return _failed(outcome, Status.ERROR, exc)
            return _failed(outcome, Status.TIMEOUT, self._timeout_error(meter, exc))
        except Exception as exc:
            return _failed(outcome, Status.ERROR, exc)
        outcome.status, outcome.error = Status.OK, None
        return None

    def _time_left(self, meter: Meter) -> float | None:
        run_end, task_end = self.scope.deadline, meter.deadline
        if run_end is None and task_end is None:
            return None
        end = min(e for e in (run_end, task_end) if e is not None)
        return end - asyncio.get_running_loop().time()

    def deadline_passed(self) -> bool:
        deadline = self.scope.deadline
        return deadline is not None and asyncio.get_running_loop().time() >= deadline

    def _timeout_error(self, meter: Meter, expired: TimeoutError) -> errors.Timeout:
        if self.deadline_passed():
            error = errors.Timeout("the run's deadline passed while this task ran")
        else:
            error = errors.Timeout(f"the task took longer than its {self.timeout}s timeout")
        error.__cause__ = meter.last_error or _call_error_behind(expired)
        return error


def _failed(outcome: Outcome[R], status: Status, exc: BaseException) -> BaseException:
    outcome.status, outcome.error, outcome.value = status, exc, None
    return exc


def _call_error_behind(expired: TimeoutError) -> BaseException | None:
    """The failure being handled when the time ran out (a call's error whose retry was
    waiting), if any: the real reason the task did not finish."""
    seen: BaseException | None = expired.__cause__  # the CancelledError of the timeout
    for _ in range(8):  # a short chain: the cancellation, then what it interrupted
        if seen is None or isinstance(seen, errors.QuorumError):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None
