"""A rich progress display on stderr, fed by the engine's events.

One bar per group (a reviewer, a section, a language...), with retries shown as they are
scheduled. It appears only once a run has lasted a second, and only on a terminal, so
short runs and piped output stay clean.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from types import TracebackType

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn

from quorum.cli.common import stderr
from quorum.engine.events import Event, EventKind


def by_run_label(event: Event) -> str:
    return event.run or "calls"


class ProgressDisplay:
    def __init__(
        self,
        title: str,
        *,
        group: Callable[[Event], str] = by_run_label,
        console: Console = stderr,
        delay_s: float = 1.0,
        enabled: bool | None = None,
    ) -> None:
        self.title = title
        self.group = group
        self.delay_s = delay_s
        self.enabled = console.is_terminal if enabled is None else enabled
        self._progress = progress_bars(console)
        self._tasks: dict[str, TaskID] = {}
        self._retries: dict[str, int] = {}
        self._totals: dict[str, int] = {}
        self._created = time.monotonic()
        self._live = False

    def __enter__(self) -> ProgressDisplay:
        self._created = time.monotonic()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._live:
            self._progress.stop()

    def on_event(self, event: Event) -> None:
        name = self.group(event)
        task = self._task(name)
        if event.kind is EventKind.QUEUED:
            self._totals[name] = self._totals.get(name, 0) + 1
            self._progress.update(task, total=self._totals[name])
        elif event.kind is EventKind.FINISHED:
            self._progress.advance(task)
        elif event.kind is EventKind.RETRY:
            self._retries[name] = self._retries.get(name, 0) + 1
            retries, delay = self._retries[name], event.delay or 0.0
            note = f"[yellow]{retries} retries; next in {delay:.1f}s ({escape(str(event.error))})[/yellow]"
            self._progress.update(task, note=note)
        self._maybe_show()

    def _task(self, name: str) -> TaskID:
        if name not in self._tasks:
            # A section or language name is text, not markup: "[draft]" stays as written.
            self._tasks[name] = self._progress.add_task(escape(name), total=0, note="")
        return self._tasks[name]

    def _maybe_show(self) -> None:
        if self.enabled and not self._live and time.monotonic() - self._created >= self.delay_s:
            self._progress.start()
            self._live = True


def progress_bars(console: Console) -> Progress:
    """Bars on ``console``: each task's description, bar, done/total, ``note`` field and
    time elapsed."""
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[note]}"),
        TimeElapsedColumn(),
        console=console,
        transient=False,
        # Rich would otherwise capture sys.stdout while the bars show and print it on
        # stderr above them: results written to stdout must stay on stdout.
        redirect_stdout=False,
        redirect_stderr=False,
    )
