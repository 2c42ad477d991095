"""What a call needs to know about the run and the task it belongs to.

The engine sets two context variables while a task runs: the run's ``Scope`` (budgets,
deadline, event sink, label) and the task's ``Meter`` (usage, cost, retries). Calls made
anywhere inside the task, however deep, charge the meter and the budgets; a run started
inside a task (a section that runs a vote) inherits the outer budgets and deadline, and its
tasks' meters roll up into the outer task's. This is how budgets, deadlines and accounting
pass down to nested calls without threading them through every signature.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass

from quorum.engine.budget import Budget
from quorum.engine.clock import Clock
from quorum.engine.events import Event, EventKind, EventSink
from quorum.errors import describe
from quorum.llm.types import Usage


@dataclass(frozen=True, slots=True)
class Scope:
    budgets: tuple[Budget, ...] = ()
    deadline: float | None = None  # on the event loop's clock
    sink: EventSink | None = None
    label: str = ""

    def exhausted(self) -> str | None:
        for budget in self.budgets:
            reason = budget.exhausted
            if reason:
                return reason
        return None

    def check_budget(self) -> None:
        for budget in self.budgets:
            budget.check()

    def child(
        self,
        label: str = "",
        *,
        sink: EventSink | None = None,
        budgets: Iterable[Budget | None] = (),
        deadline: float | None = None,
    ) -> Scope:
        """The scope inside this one: ``label`` after this label, ``sink`` (else this
        sink), these budgets and ``budgets`` (each charged once, however often it is
        named on the way down), and the sooner of the two deadlines."""
        chosen = list(self.budgets)
        for budget in budgets:
            if budget is not None and not any(budget is b for b in chosen):
                chosen.append(budget)
        ends = [end for end in (self.deadline, deadline) if end is not None]
        return Scope(
            tuple(chosen),
            min(ends) if ends else None,
            sink or self.sink,
            "/".join(part for part in (self.label, label) if part),
        )


@dataclass(slots=True)
class Meter:
    """One task's running account."""

    task_id: str
    index: int
    clock: Clock
    scope: Scope = Scope()
    parent: Meter | None = None
    usage: Usage = Usage()
    cost: float | None = None
    calls: int = 0
    unpriced: int = 0
    retries: int = 0
    call_s: float = 0.0  # time the provider spent answering, without waits for limits or slots
    deadline: float | None = None  # the task's own end (its timeout), on the event loop's clock
    last_error: BaseException | None = None  # the last failed call's error, kept as a timeout's cause

    def charge(self, usage: Usage, cost: float | None, seconds: float = 0.0) -> None:
        self.last_error = None  # answered: an earlier failure no longer explains a timeout
        meter: Meter | None = self
        while meter is not None:
            meter.calls += 1
            meter.call_s += seconds
            meter.usage = meter.usage + usage
            if cost is None:
                meter.unpriced += 1
            else:
                meter.cost = (meter.cost or 0.0) + cost
            meter = meter.parent
        for budget in self.scope.budgets:
            budget.charge(usage, cost)

    def note_failed_call(self, exc: BaseException | None = None) -> None:
        """A call that failed without an answer: counted, nothing to bill."""
        if exc is not None:
            self.last_error = exc
        meter: Meter | None = self
        while meter is not None:
            meter.calls += 1
            meter = meter.parent

    def note_retry(self, attempt: int, delay: float, exc: BaseException) -> None:
        self.last_error = exc
        meter: Meter | None = self
        while meter is not None:
            meter.retries += 1
            meter = meter.parent
        self.emit(EventKind.RETRY, attempt=attempt, delay=delay, error=describe(exc))

    def emit(self, kind: EventKind, **fields: object) -> None:
        if self.scope.sink is not None:
            event = Event(kind, self.task_id, self.index, self.clock.now(), self.scope.label, **fields)  # type: ignore[arg-type]
            self.scope.sink(event)

    @property
    def known_cost(self) -> float | None:
        """The task's cost; ``None`` when any of its calls had no known price."""
        return None if self.unpriced else (self.cost if self.calls else None)


current_scope: ContextVar[Scope | None] = ContextVar("quorum_scope", default=None)
current_meter: ContextVar[Meter | None] = ContextVar("quorum_meter", default=None)


def check_budget() -> None:
    """Raise ``BudgetExceeded`` if the current run's budget is spent."""
    scope = current_scope.get()
    if scope is not None:
        scope.check_budget()


def charge(usage: Usage, cost: float | None, seconds: float = 0.0) -> None:
    """Account one finished call (``seconds`` of provider time) to the current task, its
    parents and the budgets."""
    meter = current_meter.get()
    if meter is not None:
        meter.charge(usage, cost, seconds)


def note_failed_call(exc: BaseException | None = None) -> None:
    meter = current_meter.get()
    if meter is not None:
        meter.note_failed_call(exc)


def time_left(now: float) -> float | None:
    """Seconds from ``now`` (the event loop's clock) until the sooner of the run's deadline
    and the current task's timeout; ``None`` when neither bounds it. A retry whose wait
    would outlive it is not scheduled: the call's own error is the honest outcome."""
    scope, meter = current_scope.get(), current_meter.get()
    ends = [
        end
        for end in (scope.deadline if scope else None, meter.deadline if meter else None)
        if end is not None
    ]
    return min(ends) - now if ends else None


def note_retry(attempt: int, delay: float, exc: BaseException) -> None:
    meter = current_meter.get()
    if meter is not None:
        meter.note_retry(attempt, delay, exc)


@contextmanager
def nest(
    label: str = "", *, on_event: EventSink | None = None, budget: Budget | None = None
) -> Iterator[None]:
    """Give the runs started inside the block a label, an event sink and a budget.

    Workflows start their own runs (a sectioning run, a vote), so a caller cannot pass
    ``on_event`` or a label to each; inside ``with nest(...)`` every run, however deep,
    gets ``label`` after the enclosing run's label (so its events can be grouped), reports
    to ``on_event`` (else to the enclosing sink) and is charged to ``budget`` as well as
    to every enclosing budget. The deadline stays the enclosing one. It is the same
    step a run takes for its own tasks (``Scope.child``)."""
    scope = (current_scope.get() or Scope()).child(label, sink=on_event, budgets=(budget,))
    token = current_scope.set(scope)
    try:
        yield
    finally:
        current_scope.reset(token)
