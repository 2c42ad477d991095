"""Failure policies, with the chapter's names and meaning, plus ``Quorum(k)``.

A policy is an object the runner *asks*; it never reaches into the run. After each
outcome the runner asks ``decide`` and acts on the ``Decision`` (go on, stop dispatching,
or stop and cancel the tasks in flight); once everything has ended it asks ``verdict``
for the error to raise, if any. A policy also names the task-level retry it implies
(``retry``) and whether the run should keep each failure's message for that verdict
(``keeps_failures``). Policies hold no state: the run's counts live in a ``Tally`` the
runner keeps and passes in.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Protocol

from quorum.engine.outcome import Outcome, Status
from quorum.engine.retry import CHAPTER_RETRY, Retry
from quorum.errors import ConfigError, IncompleteRun, QuorumNotReached, RunAborted, RunFailed

QUOTED_FAILURES = 10  # Quorum(k) quotes this many failures in its error, not more


class Action(Enum):
    """What the runner does after an outcome."""

    CONTINUE = "continue"
    STOP = "stop"  # dispatch nothing more; the rest is skipped; the tasks in flight finish
    CANCEL = "cancel"  # as STOP, and cancel the tasks in flight (billing stops)


@dataclass(frozen=True, slots=True)
class Decision:
    action: Action
    reason: str = ""  # why the run stops, for the summary


CONTINUE = Decision(Action.CONTINUE)


@dataclass(slots=True)
class Tally:
    """What a run has seen so far, kept by the runner for its policy."""

    ok: int = 0
    failed: int = 0  # ERROR and TIMEOUT outcomes
    skipped: int = 0
    stopped: str | None = None  # why dispatch stopped early, if it did
    first_failure: Outcome[Any] | None = None
    failures: list[str] = field(default_factory=list)  # "id: Type: message", if kept

    def count(self, outcome: Outcome[Any], keep: bool) -> None:
        if outcome.ok:
            self.ok += 1
        elif outcome.status is Status.SKIPPED:
            self.skipped += 1
        elif outcome.status is not Status.CANCELLED:
            self.failed += 1
            self.first_failure = self.first_failure or outcome
            if keep:
                self.failures.append(f"{outcome.id}: {outcome.error_message}")


class RunPolicy(Protocol):
    """The hooks a run asks. Each returns a decision; none acts on the run."""

    retry: Retry | None  # the task-level retry this policy implies (``None``: none)

    def keeps_failures(self, tally: Tally) -> bool:
        """Whether the next failure's message should be kept for the verdict."""
        ...

    def decide(self, outcome: Outcome[Any], tally: Tally) -> Decision:
        """After ``outcome`` (already counted in ``tally``): go on, stop, or cancel."""
        ...

    def verdict(self, tally: Tally, result: Any) -> RunFailed | None:
        """Once everything ended: the error to raise, carrying ``result``, or ``None``."""
        ...


class _Policy:
    """The defaults: no retry, keep nothing, never stop, never raise."""

    retry: Retry | None = None

    def keeps_failures(self, tally: Tally) -> bool:
        return False

    def decide(self, outcome: Outcome[Any], tally: Tally) -> Decision:
        return CONTINUE

    def verdict(self, tally: Tally, result: Any) -> RunFailed | None:
        return None


class Ignore(_Policy):
    """Run everything; keep what succeeded; failures are data."""


class FailFast(_Policy):
    """The first failure cancels the tasks in flight and skips the rest; then raise."""

    def decide(self, outcome: Outcome[Any], tally: Tally) -> Decision:
        if outcome.status in (Status.ERROR, Status.TIMEOUT) and tally.failed == 1:
            return Decision(Action.CANCEL, f"FAIL_FAST: {outcome.id} failed")
        return CONTINUE

    def verdict(self, tally: Tally, result: Any) -> RunFailed | None:
        first = tally.first_failure
        if first is None:
            return None
        error = RunAborted(
            f"{first.id} failed ({first.error_message}); FAIL_FAST cancelled the calls in "
            f"flight and skipped the rest",
            result,
        )
        error.__cause__ = first.error
        return error


class RetryFailed(_Policy):
    """Re-run a failed task on the chapter's schedule when re-running may help (see
    ``retry.worth_rerunning``: never what the connection already retried)."""

    retry: Retry | None = CHAPTER_RETRY


class RequireAll(_Policy):
    """Run everything; raise ``IncompleteRun`` listing every failure, and also when a
    budget or the deadline left work undone: skipped is not done."""

    def keeps_failures(self, tally: Tally) -> bool:
        return True

    def verdict(self, tally: Tally, result: Any) -> RunFailed | None:
        if tally.failures:
            listing = "; ".join(tally.failures)
            return IncompleteRun(f"{len(tally.failures)} tasks failed: {listing}", result)
        if tally.skipped or tally.stopped:
            skipped = f"{tally.skipped} tasks were skipped" if tally.skipped else "tasks were left"
            return IncompleteRun(
                f"{skipped}: {tally.stopped or 'the run stopped early'}; REQUIRE_ALL needs every task done",
                result,
            )
        return None


@dataclass(frozen=True, slots=True)
class Quorum(_Policy):
    """Done once ``k`` tasks have succeeded (the calls still in flight are cancelled);
    raises ``QuorumNotReached`` if they cannot."""

    k: int

    def __post_init__(self) -> None:
        if isinstance(self.k, bool) or not isinstance(self.k, int) or self.k < 1:
            raise ConfigError(f"Quorum(k) needs a whole number k >= 1, got {self.k!r}")

    def keeps_failures(self, tally: Tally) -> bool:
        return len(tally.failures) < QUOTED_FAILURES

    def decide(self, outcome: Outcome[Any], tally: Tally) -> Decision:
        if outcome.ok and tally.ok == self.k:
            return Decision(Action.CANCEL, f"quorum of {self.k} reached")
        return CONTINUE

    def verdict(self, tally: Tally, result: Any) -> RunFailed | None:
        if tally.ok >= self.k:
            return None
        return QuorumNotReached(
            f"only {tally.ok} of the {self.k} successes needed; "
            f"{tally.failed} tasks failed: {'; '.join(tally.failures)}",
            result,
        )


class FailurePolicy(Enum):
    """How a run treats failures (the chapter's names; each stands for a policy object).

    IGNORE: run everything and keep what succeeded. FAIL_FAST: the first failure cancels
    the calls in flight (so billing stops) and skips the rest, then the run raises.
    RETRY: LLM calls are retried by their connection; a whole task is re-run only for a
    failure no call layer retried (a plain function's error, an answer that broke its
    schema), on the chapter's schedule. REQUIRE_ALL: run everything, then raise listing
    every failure or what was skipped. ``FailurePolicy.quorum(k)``: done once ``k`` tasks
    succeeded; the calls still in flight are cancelled.
    """

    IGNORE = "ignore"
    FAIL_FAST = "fail_fast"
    RETRY = "retry"
    REQUIRE_ALL = "require_all"

    @staticmethod
    def quorum(k: int) -> Quorum:
        return Quorum(k)

    @property
    def rules(self) -> RunPolicy:
        """The policy object this name stands for."""
        return _RULES[self]


_RULES: dict[FailurePolicy, RunPolicy] = {
    FailurePolicy.IGNORE: Ignore(),
    FailurePolicy.FAIL_FAST: FailFast(),
    FailurePolicy.RETRY: RetryFailed(),
    FailurePolicy.REQUIRE_ALL: RequireAll(),
}

Policy = FailurePolicy | Quorum


def rules_of(policy: object) -> RunPolicy:
    """The policy object for a run's ``policy`` option, or a ``ConfigError`` that says
    what a policy is."""
    if isinstance(policy, FailurePolicy):
        return policy.rules
    if isinstance(policy, Quorum):
        return policy
    raise ConfigError(
        f"policy must be a FailurePolicy (IGNORE, FAIL_FAST, RETRY, REQUIRE_ALL) or "
        f"Quorum(k), got {policy!r}; e.g. policy=FailurePolicy.FAIL_FAST"
    )
