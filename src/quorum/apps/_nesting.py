"""Where the runs started inside a block report: a label, an event sink, a budget.

The engine hands every run's scope (budgets, deadline, event sink, label) down to the
runs started inside its tasks. The patterns start their own runs (a sectioning run, a
vote), so an app cannot pass ``on_event`` or ``label`` to them directly; instead it opens
a block with ``nested(...)`` and every run started inside the block, however deep,
inherits what the block says. Budgets add up: a run inside the block is charged to the
block's budget and to every enclosing one. The deadline is the enclosing one.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from quorum.run.budget import Budget
from quorum.run.context import Scope, current_scope
from quorum.run.events import EventSink


@contextmanager
def nested(
    label: str = "", *, on_event: EventSink | None = None, budget: Budget | None = None
) -> Iterator[None]:
    """Runs started inside the block get ``label`` after the enclosing run's label (so
    their events can be grouped), report to ``on_event`` (else to the enclosing sink), and
    are charged to ``budget`` as well as to the enclosing budgets."""
    outer = current_scope.get() or Scope()
    scope = Scope(
        budgets=outer.budgets + ((budget,) if budget is not None else ()),
        deadline=outer.deadline,
        sink=on_event or outer.sink,
        label="/".join(part for part in (outer.label, label) if part),
    )
    token = current_scope.set(scope)
    try:
        yield
    finally:
        current_scope.reset(token)
