"""How every task ended, and what a whole run added up to. Nothing is swallowed: a failure
is kept as the exception itself, and ``error_message`` is never empty."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Generic, TypeVar

from quorum.errors import describe
from quorum.llm.types import Usage

R = TypeVar("R")


class Status(StrEnum):
    OK = "ok"
    ERROR = "error"
    CANCELLED = "cancelled"  # stopped by the run's policy (FAIL_FAST, QUORUM, early stop)
    TIMEOUT = "timeout"  # its own timeout or the run's deadline expired while it ran
    SKIPPED = "skipped"  # never started: the run stopped first (policy, deadline, budget)


@dataclass(slots=True)
class Outcome(Generic[R]):
    """One task's end. Times are on the run's clock; ``None`` where the task never got there.
    ``attempts`` is 1 plus every retry made for this task (of the task or of its calls)."""

    index: int
    id: str
    status: Status
    value: R | None = None
    error: BaseException | None = None
    attempts: int = 0
    usage: Usage = Usage()
    cost: float | None = None
    queued_at: float | None = None
    started_at: float | None = None
    finished_at: float | None = None
    calls: int = 0
    call_s: float = 0.0  # provider time of the calls made inside the task

    @property
    def ok(self) -> bool:
        return self.status is Status.OK

    @property
    def duration(self) -> float:
        if self.started_at is None or self.finished_at is None:
            return 0.0
        return self.finished_at - self.started_at

    @property
    def error_type(self) -> str | None:
        return type(self.error).__name__ if self.error is not None else None

    @property
    def error_message(self) -> str | None:
        """``Type: message`` of the failure; for a timeout or skip without an exception,
        a sentence that says what happened."""
        if self.error is not None:
            return describe(self.error)
        if self.status is Status.OK:
            return None
        return _NO_EXCEPTION[self.status]

    def unwrap(self) -> R:
        """The value, or the failure raised again."""
        if self.status is Status.OK:
            return self.value  # type: ignore[return-value]
        if self.error is not None:
            raise self.error
        raise RuntimeError(f"{self.id} did not finish: {self.error_message}")


_NO_EXCEPTION = {
    Status.ERROR: "failed",
    Status.CANCELLED: "cancelled before it finished",
    Status.TIMEOUT: "timed out",
    Status.SKIPPED: "skipped: the run stopped before this task started",
}


@dataclass(slots=True)
class Summary:
    """Counts by status, usage and cost, and the chapter's "time saved": the sum of the
    tasks' own times against the wall time they took together."""

    counts: dict[str, int] = field(default_factory=dict)
    usage: Usage = Usage()
    cost: float | None = None
    unpriced: int = 0  # outcomes whose cost is unknown (model missing from the price table)
    wall_s: float = 0.0
    busy_s: float = 0.0
    retries: int = 0
    calls: int = 0  # provider calls made by the tasks, nested runs included
    stopped: str | None = None  # why dispatch stopped early, if it did

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    @property
    def time_saved_s(self) -> float:
        return max(0.0, self.busy_s - self.wall_s)

    def add(self, outcome: Outcome[Any]) -> None:
        self.counts[outcome.status.value] = self.counts.get(outcome.status.value, 0) + 1
        self.usage = self.usage + outcome.usage
        # The chapter's "sum of individual times": the calls' own time where the task made
        # calls (a call waiting for a rate limit or a free local model is not working),
        # else the task's.
        self.busy_s += outcome.call_s if outcome.calls else outcome.duration
        self.retries += max(0, outcome.attempts - 1)
        self.calls += outcome.calls
        if outcome.cost is not None:
            self.cost = (self.cost or 0.0) + outcome.cost
        elif outcome.calls:
            self.unpriced += 1

    def count(self, status: Status) -> int:
        return self.counts.get(status.value, 0)

    @property
    def known_cost(self) -> float | None:
        """What the calls cost; ``0.0`` when no call was made (every answer from a cache
        or a journal), ``None`` when a call had no price and nothing else did."""
        if self.cost is None and not self.calls and not self.unpriced:
            return 0.0
        return self.cost

    def spent_text(self) -> str:
        """The cost for a person: ``$0.1234``, with the calls no price covered."""
        cost = self.known_cost
        if cost is None:
            return "cost unknown"
        return f"${cost:.4f}" + (f" (+{self.unpriced} unpriced)" if self.unpriced else "")

    def line(self) -> str:
        """One closing line for a terminal."""
        by_status = ", ".join(f"{n} {s}" for s, n in sorted(self.counts.items()))
        cost = self.spent_text()
        return (
            f"{self.total} tasks ({by_status or 'none'}) in {self.wall_s:.2f}s wall, "
            f"{self.busy_s:.2f}s of calls, {self.time_saved_s:.2f}s saved; "
            f"{self.usage.prompt_tokens:,} in / {self.usage.output_tokens:,} out tokens, {cost}"
        )


@dataclass(slots=True)
class RunResult(Generic[R]):
    """Every outcome in input order, and the summary."""

    outcomes: list[Outcome[R]]
    summary: Summary

    @property
    def values(self) -> list[R]:
        """The values of the tasks that succeeded, in input order."""
        return [o.value for o in self.outcomes if o.ok]  # type: ignore[misc]

    @property
    def failures(self) -> list[Outcome[R]]:
        return [o for o in self.outcomes if not o.ok]

    def by_status(self) -> Counter[str]:
        return Counter(o.status.value for o in self.outcomes)
