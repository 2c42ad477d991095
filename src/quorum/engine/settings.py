"""Run settings: the one typed home for what a run needs besides its function and items.

The command line opens them once per command (``with settings.use(...)``) and the library
once per ``run``/``stream`` call (its keyword arguments laid over the settings in force).
Workflows and apps start runs of their own (a section that votes, a review of many units)
without passing these through by hand: every run reads the settings in force, so a budget,
a deadline or an event sink set at the top reaches every nested run.

What is *not* here: a call's own timeout, limits and retries belong to the ``Connection``
(they are per account, shared by every run that uses it), and ``policy``, ``ordered``,
``ids`` and ``label`` belong to the one run that names them.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, fields, replace

from quorum.engine import checks
from quorum.engine.budget import Budget
from quorum.engine.events import EventSink
from quorum.errors import ConfigError

DEFAULT_CONCURRENCY = 16


@dataclass(frozen=True, slots=True)
class Settings:
    """What a run is allowed: ``concurrency`` tasks in flight (when the run does not say),
    ``timeout`` seconds per task (its calls and their retries included), ``deadline``
    seconds for the whole run, a ``budget``, and where events go (``on_event``).

    Not here: the journal and the cache belong to one job (``run(journal=...)``,
    ``connect(cache=...)``), and so does an executor (``run(executor=...)``): settings
    reach every nested run, and a workflow's own runs (a vote's voters) are not calls a
    cluster can take one by one."""

    concurrency: int = DEFAULT_CONCURRENCY
    timeout: float | None = None
    deadline: float | None = None
    budget: Budget | None = None
    on_event: EventSink | None = None

    def __post_init__(self) -> None:
        checks.count("concurrency", self.concurrency)
        checks.seconds("timeout", self.timeout)
        checks.seconds("deadline", self.deadline)
        if self.budget is not None and not isinstance(self.budget, Budget):
            raise ConfigError(
                f"budget must be a quorum.Budget, got {self.budget!r}; e.g. budget=Budget(dollars=5)"
            )
        if self.on_event is not None and not callable(self.on_event):
            raise ConfigError(f"on_event must be callable with an Event, got {self.on_event!r}")

    def but(self, **changes: object) -> Settings:
        """These settings with ``changes`` laid over them; ``None`` changes nothing."""
        known = {f.name for f in fields(self)}
        unknown = sorted(set(changes) - known)
        if unknown:
            raise ConfigError(f"unknown setting(s) {unknown}; known: {sorted(known)}")
        given = {k: v for k, v in changes.items() if v is not None}
        return replace(self, **given) if given else self  # type: ignore[arg-type]


DEFAULTS = Settings()
_current: ContextVar[Settings | None] = ContextVar("quorum_settings", default=None)


def current() -> Settings:
    """The settings in force here."""
    return _current.get() or DEFAULTS


@contextmanager
def use(base: Settings | None = None, /, **changes: object) -> Iterator[Settings]:
    """Put settings in force for the block: ``base`` (else the ones in force) with
    ``changes`` laid over them. Runs started inside, however deep, read them."""
    chosen = (base or current()).but(**changes)
    token = _current.set(chosen)
    try:
        yield chosen
    finally:
        _current.reset(token)
