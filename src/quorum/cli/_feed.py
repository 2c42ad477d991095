"""The engine's events for a terminal: progress bars, and the calls for the closing line.

An app's work is runs nested in runs (texts whose votes are runs of calls; languages
whose translations and votes are runs of calls). The progress display groups the events
as the command chooses; the closing line counts the innermost tasks only, the calls
themselves, so that its "time saved" compares the sum of call times with the wall time.
"""

from __future__ import annotations

from collections.abc import Callable
from types import TracebackType

from rich.markup import escape

from quorum.apps.totals import stopped_reason
from quorum.cli.common import plural, stderr
from quorum.cli.progress import ProgressDisplay
from quorum.engine.events import Event, EventKind
from quorum.engine.outcome import Outcome, Status, Summary
from quorum.store.cache import TOTALS as cache_totals


def every_event(_event: Event) -> bool:
    return True


class Feed:
    """``on_event`` for a command: feeds its progress display and, for the events that
    ``is_call`` picks, a ``Summary`` of the calls."""

    def __init__(
        self,
        title: str,
        *,
        group: Callable[[Event], str],
        is_call: Callable[[Event], bool] = every_event,
    ) -> None:
        self.display = ProgressDisplay(title, group=group)
        self.calls = Summary()
        self._is_call = is_call
        self._cache_before = cache_totals.copy()  # durable jobs: hits during this command

    def __enter__(self) -> Feed:
        self.display.__enter__()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.display.__exit__(kind, exc, tb)

    def on_event(self, event: Event) -> None:
        self.display.on_event(event)
        if event.kind is EventKind.FINISHED and isinstance(event.outcome, Outcome) and self._is_call(event):
            self.calls.add(event.outcome)

    def close(self, run: Summary) -> None:
        """The closing lines on stderr: the calls, timed against the whole run's wall time,
        and why the run stopped early, with what it spent in all."""
        self.calls.wall_s = run.wall_s
        stderr.print(f"[dim]calls: {escape(calls_line(self.calls))}[/dim]")
        cached = cache_totals.since(self._cache_before)
        if cached.hits:  # durable jobs
            stderr.print(f"[dim]cache: {escape(cached.line())}[/dim]")
        if run.stopped:
            stderr.print(f"[yellow]stopped early: {escape(stopped_reason(run) or '')}[/yellow]")


def calls_line(s: Summary) -> str:
    """What the calls added up to. Time is "saved" only by calls that did their work:
    when none did, the line says so instead of claiming a saving."""
    by_status = ", ".join(f"{n} {status}" for status, n in sorted(s.counts.items()))
    cost = s.spent_text()
    saved = f"{s.time_saved_s:.2f}s saved" if s.count(Status.OK) else "no call succeeded"
    return (
        f"{plural(s.total, 'task')} ({by_status or 'none'}) in {s.wall_s:.2f}s wall, "
        f"{s.busy_s:.2f}s of calls, {saved}; "
        f"{s.usage.prompt_tokens:,} in / {s.usage.output_tokens:,} out tokens, {cost}"
    )


def last_label(event: Event) -> str:
    """The innermost part of a nested run's label (``"texts/votes"`` → ``"votes"``)."""
    return event.run.rsplit("/", 1)[-1]
