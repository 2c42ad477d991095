"""The one retry layer.

Provider SDKs' own retries are switched off (``max_retries=0``): stacked retry layers
multiply attempts and hide failures. A ``Retry`` decides, for each failure, whether and
when to try again: transient failures only (429, 408, 409, 5xx, 529, connection errors,
timeouts; never 400, 401, 403, 404 or an answer that broke its schema), exponential backoff
with jitter, the provider's ``retry-after`` honoured when it gives one, and two bounds:
a number of attempts and a total deadline across them. ``cannot_pass`` is the one rule
for what is never retried, at the call level or the task level.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from dataclasses import dataclass, field

from quorum.engine import checks
from quorum.errors import (
    BudgetExceeded,
    ConfigError,
    InvalidReply,
    PermanentError,
    QuorumError,
    RateLimited,
    RequestTooLarge,
    TransientError,
)


def cannot_pass(exc: BaseException) -> bool:
    """The one rule for failures no retry can mend, shared by the call layer and the task
    level: a rejected request (400, 401, 403, 404 and other 4xx but 408, 409 and 429, from
    quorum's tree or any SDK's exception with a ``status_code``), a request larger than a
    whole rate-limit bucket, a spent budget, a broken configuration."""
    if isinstance(exc, (PermanentError, ConfigError, RequestTooLarge, BudgetExceeded)):
        return True
    status = getattr(exc, "status_code", None)
    return isinstance(status, int) and 400 <= status < 500 and status not in _MAY_PASS


_MAY_PASS = frozenset({408, 409, 429})


def is_transient(exc: BaseException) -> bool:
    """Retry only what may pass: quorum's transient provider errors."""
    return isinstance(exc, TransientError)


def is_not_permanent(exc: BaseException) -> bool:
    """For arbitrary tasks (the chapter's RETRY policy): retry anything except failures
    that cannot pass (a rejected request, a bad key, a broken configuration)."""
    return isinstance(exc, Exception) and not cannot_pass(exc)


def worth_rerunning(exc: BaseException) -> bool:
    """Whether re-running a whole task may help: the task-level rule of the RETRY policy.

    Never what cannot pass (``cannot_pass``, the call layer's rule too), and never a call
    failure the connection's retry layer already handled: re-running it would multiply the
    call layer's attempts. An answer that broke its schema is the exception: the call
    layer rightly does not retry it, but a fresh task may well answer validly."""
    if not isinstance(exc, Exception):
        return False
    if isinstance(exc, InvalidReply):
        return True
    if cannot_pass(exc):
        return False
    return not (isinstance(exc, QuorumError) and exc.call_layer_done)


@dataclass(frozen=True)
class Retry:
    """When to try again.

    ``attempts`` counts every try, the first included. The n-th retry waits
    ``min(base_delay * multiplier**(n-1), max_delay)`` seconds, shortened by up to
    ``jitter`` (a share) at random so that many failed calls do not return together; a
    ``retry-after`` from the provider replaces that delay, up to ``max_pause`` seconds.
    ``deadline`` bounds the total time from the first try: a retry that would start after
    it is not made (nor, in a ``Connection``, one whose wait would outlive the run's
    deadline or the task's timeout). What ``cannot_pass`` is never retried, whatever
    ``retry_on`` says. Every number is checked: a ``ConfigError`` names a bad one.
    """

    attempts: int = 4
    base_delay: float = 0.5
    multiplier: float = 2.0
    max_delay: float = 8.0
    jitter: float = 0.25
    deadline: float | None = 300.0
    max_pause: float = 60.0
    retry_on: Callable[[BaseException], bool] = is_transient
    rng: random.Random = field(default_factory=random.Random, compare=False, repr=False)

    def __post_init__(self) -> None:
        if isinstance(self.attempts, int) and not isinstance(self.attempts, bool) and self.attempts < 1:
            raise ConfigError(
                f"Retry(attempts=...) counts the first try too, so it must be >= 1, got {self.attempts}"
            )
        checks.count("Retry(attempts=...)", self.attempts)
        checks.non_negative("Retry(base_delay=...)", self.base_delay)
        checks.positive("Retry(multiplier=...)", self.multiplier)
        if self.max_delay != math.inf:  # no cap on the backoff is a valid choice
            checks.non_negative("Retry(max_delay=...)", self.max_delay)
        checks.seconds("Retry(deadline=...)", self.deadline)
        checks.positive("Retry(max_pause=...)", self.max_pause, unit=" seconds")
        if not 0 <= checks.non_negative("Retry(jitter=...)", self.jitter) <= 1:
            raise ConfigError(f"Retry(jitter=...) is a share between 0 and 1, got {self.jitter}")

    def delay(self, attempt: int, exc: BaseException, elapsed: float) -> float | None:
        """Seconds to wait before try ``attempt + 1``, or ``None`` to give up now.

        What cannot pass is never retried, whatever ``retry_on`` says. A provider's
        ``retry-after`` is honoured up to ``max_pause`` seconds (a gateway asking for a
        day, or for ever, must not stall the run)."""
        if attempt >= self.attempts or not self.retry_on(exc):
            return None
        if cannot_pass(exc) and not isinstance(exc, InvalidReply):
            return None  # an answer that broke its schema: retry_on decides (tasks re-run it)
        wait = self.backoff(attempt)
        advised = advised_wait(exc)
        if advised is not None and advised > 0:
            # Advice past the deadline means no answer in time: give up now. Otherwise wait
            # as advised, up to max_pause.
            if self.deadline is not None and elapsed + advised > self.deadline:
                return None
            wait = min(advised, self.max_pause)
        if self.deadline is not None and elapsed + wait > self.deadline:
            return None
        return wait

    def backoff(self, attempt: int) -> float:
        raw = min(self.base_delay * self.multiplier ** (attempt - 1), self.max_delay)
        return raw * (1 - self.jitter * self.rng.random())


def advised_wait(exc: BaseException) -> float | None:
    """The provider's own ``retry-after`` advice carried by an error, if any."""
    if isinstance(exc, RateLimited) and exc.retry_after is not None:
        return exc.retry_after
    info = getattr(exc, "rate_limits", None)
    return info.retry_after if info is not None else None


NO_RETRY = Retry(attempts=1)

CHAPTER_RETRY = Retry(
    attempts=3,
    base_delay=1.0,
    multiplier=2.0,
    max_delay=600.0,  # the chapter has no cap; ten minutes is as good as none for a task
    jitter=0.0,
    deadline=None,
    retry_on=worth_rerunning,
)
"""The chapter's task-level schedule, defined once: 3 tries in all, waiting 1 s then 2 s
(``retry_delay * 2**n``, no jitter), and only for failures that re-running may
fix (``worth_rerunning``). ``FailurePolicy.RETRY`` uses it; the chapter's
``parallel_with_policy`` and ``execute_with_retry`` change its attempts and first delay."""
