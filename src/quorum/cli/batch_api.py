"""``--batch-api`` at the command line: progress lines, Ctrl-C, and the closing line.

Commands that take ``--batch-api`` (``quorum batch``; ``quorum moderate --input`` and
``quorum eval review`` through the same call) hand their items to ``run_with_batches``:
it follows the batches with ``quorum.engine.batches.BatchRunner``, shows each batch's
state, counts and time since submission on stderr, and turns Ctrl-C into a stop: the first
detaches (the batches keep running at the provider; the same command resumes them), the
second also cancels them.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from rich.console import Console

from quorum.cli.common import stderr
from quorum.engine.batch_ledger import BatchLedger
from quorum.engine.batches import BatchReport, BatchRunner, BatchStop, BatchView, Fallback, Record
from quorum.llm.batches import BatchApi, BatchItem
from quorum.llm.types import Reply, Request


def describe(view: BatchView) -> str:
    """One batch as a progress line: state, counts, time since submission."""
    c = view.counts
    done = c.succeeded + c.errored + c.expired + c.canceled
    parts = [f"{done}/{c.total} done"] if c.total else []
    parts += [f"{n} {word}" for n, word in ((c.errored, "errored"), (c.expired, "expired")) if n]
    counts = f" ({', '.join(parts)})" if parts else ""
    return f"batch {view.batch_id or view.tag}: {view.state}{counts}, {_age(view.age_s)} since submission"


class BatchProgressLines:
    """Prints a batch's line when its state or counts change (a line per change, so it
    reads the same on a terminal and in a log)."""

    def __init__(self, console: Console = stderr) -> None:
        self._console = console
        self._last: dict[str, tuple[str, object]] = {}

    def __call__(self, views: list[BatchView]) -> None:
        for view in views:
            key = (view.state, view.counts)
            if self._last.get(view.tag) != key:
                self._last[view.tag] = key
                self._console.print(describe(view), highlight=False)


@contextmanager
def ctrl_c_stops(stop: BatchStop, resume: str, console: Console = stderr) -> Iterator[None]:
    """SIGINT and SIGTERM request stops while the block runs: the first detaches, the
    second cancels the remote batches too."""
    loop = asyncio.get_running_loop()

    def on_signal() -> None:
        if stop.request() == "detach":
            console.print(
                "detaching: the batches keep running at the provider (they end within 24 hours); "
                f"to collect their results run: {resume}",
                highlight=False,
            )
        else:
            console.print(
                "cancelling the remote batches; answers they already gave are kept", highlight=False
            )

    installed = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, on_signal)
            installed.append(sig)
        except (NotImplementedError, RuntimeError):  # not the main thread, or no signals here
            pass
    try:
        yield
    finally:
        for sig in installed:
            loop.remove_signal_handler(sig)


async def run_with_batches(
    api: BatchApi,
    items: Sequence[BatchItem],
    journal: Path,
    *,
    resume: str,
    fallback: Fallback | None = None,
    time_limit_s: float | None = None,
    store: Callable[[Request, Reply], None] | None = None,
    on_result: Callable[[Record], None] | None = None,
    console: Console = stderr,
    cancel_window_s: float = 3.0,
) -> tuple[BatchReport, dict[str, Record]]:
    """Follow ``items`` through ``api`` to their end (or a stop); the report and every
    item's journaled result by custom_id (earlier runs' included). After a detach, a
    second Ctrl-C within ``cancel_window_s`` cancels the batches left running."""
    stop = BatchStop()
    with BatchLedger(journal) as ledger, ctrl_c_stops(stop, resume, console):
        runner = BatchRunner(
            api,
            ledger,
            fallback=fallback,
            time_limit_s=time_limit_s,
            store=store,
            on_result=on_result,
            on_progress=BatchProgressLines(console),
            stop=stop,
        )
        report = await runner.run(items)
        if report.detached and not stop.cancelling:
            console.print(f"Ctrl-C within {cancel_window_s:g} s cancels them", highlight=False)
            if await stop.wait_for_cancel(cancel_window_s):
                await runner.cancel_open()
        return report, ledger.results([item.custom_id for item in items])


def closing_line(report: BatchReport, resume: str) -> str:
    """What the run did, and when it detached, how to resume."""
    line = (
        f"{report.succeeded} answered, {report.failed} failed, {report.from_journal} from the journal; "
        f"{report.batches_created} batch(es) created, {report.resubmitted} item(s) resubmitted, "
        f"{report.online} online; ${report.cost:.4f} at the batch price"
    )
    if report.detached:
        line += f"; detached from {', '.join(report.open_batches)}: run `{resume}` to resume"
    return line


def _age(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"
