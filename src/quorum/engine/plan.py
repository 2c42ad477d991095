"""One run's options, checked once where they enter: the settings in force
(``settings.use``) with the keywords of the ``run``/``stream`` call laid over them.

The settings carry what every run in a block shares (concurrency, a task's timeout, the
run's deadline, a budget, the event sink); the call adds what belongs to that run alone
(its policy, a task-level retry, task ids, a clock, a label, the order of its outcomes).
A budget in the settings and the run's own budget both apply; the run's own event sink
comes before the enclosing run's, which comes before the one in the settings.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from quorum import errors
from quorum.engine import settings
from quorum.engine.budget import Budget
from quorum.engine.clock import Clock
from quorum.engine.context import Meter, Scope
from quorum.engine.events import EventSink
from quorum.engine.policy import RunPolicy, rules_of
from quorum.engine.retry import Retry


@dataclass(frozen=True, slots=True)
class Plan:
    """One run's options, checked: the settings in force with the call's own laid over."""

    settings: settings.Settings
    rules: RunPolicy
    retry: Retry | None
    budget: Budget | None  # the run's own, besides the one in the settings
    on_event: EventSink | None  # the run's own, before the enclosing run's sink
    ids: Callable[[int, Any], str] | None
    clock: Clock
    label: str
    ordered: bool

    def scope_in(self, outer: Scope, parent: Meter | None, now: float) -> Scope:
        """The scope of this run's tasks, started at ``now`` (the loop's clock) inside
        ``outer``: its label after the outer one, its budgets added to the outer ones,
        and a deadline no later than the outer run's or the enclosing task's own end."""
        chosen = self.settings
        ends = [parent.deadline if parent else None]  # a run inside a task ends with it
        if chosen.deadline is not None:
            ends.append(now + chosen.deadline)
        known = [end for end in ends if end is not None]
        return outer.child(
            self.label,
            sink=self.on_event or outer.sink or chosen.on_event,
            budgets=(chosen.budget, self.budget),
            deadline=min(known) if known else None,
        )


def make_plan(
    concurrency: int | None,
    policy: object,
    retry: Retry | None,
    timeout: float | None,
    deadline: float | None,
    budget: Budget | None,
    on_event: EventSink | None,
    ids: Callable[[int, Any], str] | None,
    clock: Clock,
    label: str,
    ordered: bool = False,
) -> Plan:
    """The run's plan; a ``ConfigError`` names any option that is wrong."""
    chosen = settings.current().but(concurrency=concurrency, timeout=timeout, deadline=deadline)
    settings.Settings(budget=budget, on_event=on_event)  # checks the run's own
    rules = rules_of(policy)
    if retry is not None and not isinstance(retry, Retry):
        raise errors.ConfigError(f"retry must be a quorum.Retry, got {retry!r}; e.g. retry=Retry(attempts=3)")
    if ids is not None and not callable(ids):
        raise errors.ConfigError(f"ids must be callable as ids(index, item) -> str, got {ids!r}")
    task_retry = retry if retry is not None else rules.retry
    return Plan(chosen, rules, task_retry, budget, on_event, ids, clock, label, ordered)
