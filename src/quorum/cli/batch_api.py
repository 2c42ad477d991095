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
import contextlib
import json
import shlex
import signal
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from quorum.cli._batch_lines import Line, read_line
from quorum.cli.batch import Models, Output, journal_file, read_input
from quorum.cli.common import Settings, fail, stderr
from quorum.engine.batch_ledger import BatchLedger
from quorum.engine.batches import BatchReport, BatchRunner, BatchStop, BatchView, Fallback, Record
from quorum.engine.connection import Connection
from quorum.errors import ConfigError
from quorum.llm.batches import BatchApi, BatchItem, batches_for
from quorum.llm.types import Reply, Request
from quorum.store.cache import ResponseCache
from quorum.store.journal import hold_lock


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
    poll_s: float = 60.0,
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
            poll_s=poll_s,
            first_poll_s=min(5.0, poll_s),
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


# --- `quorum moderate --batch-api`, `quorum eval review --batch-api` ---------------------------


BatchApiOpt = Annotated[
    bool,
    typer.Option(
        "--batch-api",
        help="Send every call as provider batches: half the price, answers within 24 h "
        "(with --journal, run the same command again to resume).",
    ),
]
FallbackOnlineOpt = Annotated[
    bool, typer.Option("--fallback-online", help="With --batch-api: answer online what batches could not.")
]
DeadlineOpt = Annotated[
    float | None,
    typer.Option("--deadline", min=1.0, help="With --batch-api: seconds the batches may take in all."),
]
PollOpt = Annotated[
    float,
    typer.Option("--poll", min=0.01, help="With --batch-api: most seconds between two polls of a batch."),
]


@dataclass(frozen=True)
class BatchMode:
    """``--batch-api`` and its options, as a command parsed them."""

    fallback_online: bool = False
    deadline: float | None = None
    poll_s: float = 60.0

    def options(self) -> dict[str, Any]:
        """The keywords of ``batch_calls``."""
        return {"fallback_online": self.fallback_online, "deadline": self.deadline, "poll_s": self.poll_s}


def batch_mode(
    batch_api: bool, fallback_online: bool, deadline: float | None, poll_s: float, *, budget: float | None
) -> BatchMode | None:
    """The batch options checked together: ``None`` without ``--batch-api``."""
    if not batch_api:
        if fallback_online or deadline is not None:
            fail("--fallback-online and --deadline go with --batch-api")
        return None
    if budget is not None:
        fail(
            "--budget stops calls one by one, but a batch is billed as a whole once it runs, so "
            "it cannot hold a batch to a budget; drop --budget with --batch-api (a batch costs half "
            "the online price of its calls)"
        )
    return BatchMode(fallback_online, deadline, poll_s)


def batch_facts(report: BatchReport) -> Record:
    """What the batches did, for a command's JSON summary (``cost_usd`` at the batch price,
    answers given online with ``--fallback-online`` included)."""
    return {
        "batches_created": report.batches_created,
        "items": report.items,
        "from_journal": report.from_journal,
        "answered": report.succeeded,
        "failed": report.failed,
        "resubmitted": report.resubmitted,
        "online": report.online,
        "cost_usd": round(report.cost, 6),
        "detached": report.detached,
    }


def resume_command() -> str:
    """The command line that resumes this run (the same one)."""
    return "quorum " + " ".join(shlex.quote(arg) for arg in sys.argv[1:])


async def batch_calls(
    online: Connection,
    requests: Mapping[str, Request],
    journal: Path | None,
    *,
    restart: bool = False,
    fallback_online: bool = False,
    deadline: float | None = None,
    poll_s: float = 60.0,
    console: Console = stderr,
    **options: object,
) -> tuple[BatchReport, dict[str, Record]]:
    """An application's planned ``requests`` (by custom_id) through the batch API of
    ``online``'s model, journaled in ``journal`` (the command's own ``--journal`` file:
    the batch tables sit beside its items); the report and every result by custom_id.
    ``restart`` forgets earlier batches first (refused while one is still open); with
    ``fallback_online`` what batches cannot answer is answered through ``online``, whose
    response cache the batch answers fill. ``options`` go to the batch adapter."""
    try:
        api = batches_for(f"{online.name}/{online.model}", **options)
    except ConfigError as exc:
        fail(str(exc))
    cache = online.cache

    def store(request: Request, reply: Reply) -> None:
        if cache is not None:
            cache.store(online, request, reply)

    items = [BatchItem(custom_id, request) for custom_id, request in requests.items()]
    try:
        with _ledger_path(journal) as path, hold_lock(path):  # one process per job
            if restart:
                forget(path)
            if not items:
                return BatchReport(), {}
            return await run_with_batches(
                api,
                items,
                path,
                resume=resume_command(),
                fallback=online.complete if fallback_online else None,
                time_limit_s=deadline,
                store=store,
                console=console,
                poll_s=poll_s,
            )
    finally:
        await api.aclose()


# --- `quorum batch --batch-api` -----------------------------------------------------------------


class BatchApiJob:
    """``quorum batch ... --batch-api``: the lines through the provider's batch API.

    Lines that cannot be read, or whose answer is in the response cache, get their result
    at once; the others go through one model's batch API (the batch APIs take one model per
    batch, so a job names one model: ``--model`` or the lines' own). Output lines have the
    same fields as without ``--batch-api``, in input order, each once; the output file is
    complete only once every line has its result (``OUTPUT.partial`` until then)."""

    def __init__(
        self,
        settings: Settings,
        input_path: str,
        output: str,
        journal: Path | None,
        *,
        restart: bool,
        no_cache: bool,
        fallback_online: bool,
        deadline: float | None,
        poll_s: float = 60.0,
    ) -> None:
        self.poll_s = poll_s
        self.settings, self.input_path, self.output, self.journal = settings, input_path, output, journal
        self.restart, self.fallback_online, self.deadline = restart, fallback_online, deadline
        self.cache = None if no_cache else ResponseCache()
        self.models = Models(settings, self.cache)
        self.resume = resume_command()

    async def run(self) -> int:
        started = time.perf_counter()
        lines = await self._lines()
        model = self._model(lines)
        early = {line.id: rec for line in lines if (rec := self._early(line, model)) is not None}
        report = BatchReport()
        results: dict[str, Record] = {}
        todo = [BatchItem(line.id, line.request) for line in lines if line.id not in early and line.request]
        with _ledger_path(self.journal) as path, hold_lock(path):  # one process per job, output included
            try:
                if todo and model is not None:
                    report, results = await self._batches(model, todo, path)
            finally:
                await self.models.aclose()
            records = [early.get(line.id) or _output_record(line.id, results.get(line.id)) for line in lines]
            complete = not report.detached and all(r is not None for r in records)
            written = self._write([r for r in records if r is not None], complete)
        failed = sum(1 for r in records if r is not None and r["status"] != "ok")
        code = self._close(report, written, complete, len(early), time.perf_counter() - started)
        return 1 if code == 0 and failed else code

    async def _lines(self) -> list[Line]:
        lines: list[Line] = []
        seen: dict[str, int] = {}
        async for number, raw in read_input(self.input_path):
            line = read_line(number, raw)
            if line is None:
                continue
            first = seen.setdefault(line.id, number)
            if first != number:
                error = f"line {number}: custom_id {line.id!r} was already used on line {first}"
                line = Line(number, f"{line.id}@line{number}", line.fingerprint, error=error)
            lines.append(line)
        return lines

    def _model(self, lines: list[Line]) -> str | None:
        chosen = {self.models.choose(line) for line in lines if line.error is None}
        if len(chosen) > 1:
            fail(
                f"--batch-api runs one model per job, and the lines name {len(chosen)} "
                f"({', '.join(sorted(chosen))}); give --model, or split the input by model"
            )
        return next(iter(chosen), None)

    def _early(self, line: Line, model: str | None) -> Record | None:
        """The line's result without a batch: its error, or the cached answer."""
        if line.error is not None or line.request is None or model is None:
            return _error(line.id, line.error or f"line {line.number} has no request")
        if self.cache is None:
            return None
        _, hit = self.cache.lookup(self.models.get(model), line.request)
        if hit is None:
            return None
        return {**_as_output(_ok_record(line.id, hit)), "cached": True}

    async def _batches(
        self, model: str, todo: list[BatchItem], path: Path
    ) -> tuple[BatchReport, dict[str, Record]]:
        connection = self.models.get(model)
        try:
            api = batches_for(model)
        except ConfigError as exc:
            fail(str(exc))
        cache = self.cache

        def store(request: Request, reply: Reply) -> None:
            if cache is not None:
                cache.store(connection, request, reply)

        if self.restart:
            forget(path)
        try:
            return await run_with_batches(
                api,
                todo,
                path,
                resume=self.resume,
                fallback=connection.complete if self.fallback_online else None,
                time_limit_s=self.deadline,
                store=store,
                poll_s=self.poll_s,
            )
        finally:
            await api.aclose()

    def _write(self, records: list[Record], complete: bool) -> int:
        if self.output == "-" and not complete:
            return 0  # stdout cannot be rewritten: it gets the results once, when all are in
        out = Output(self.output)
        out.open()
        for record in records:
            out.write(record)
        out.close(complete=complete)
        return out.written

    def _close(self, report: BatchReport, written: int, complete: bool, early: int, wall_s: float) -> int:
        where = self.output if complete or self.output == "-" else self.output + ".partial"
        stderr.print(
            f"batch: {written} results in {where} ({closing_line(report, self.resume)}; "
            f"{early} without a batch) in {wall_s:.1f}s",
            highlight=False,
            markup=False,
        )
        if self.settings.json:
            sys.stdout.write(json.dumps(_summary(report, written, complete, wall_s)) + "\n")
        if report.detached:
            return 130
        return 0 if complete else 1


def forget(path: Path) -> None:
    """``--restart`` with ``--batch-api``: forget the batch records, unless a batch is still
    open at the provider (forgetting it would pay for its items twice)."""
    with BatchLedger(path) as ledger:
        running = ledger.open_intents()
        if running:
            ids = ", ".join(o.batch_id or o.intent.tag for o in running)
            fail(
                f"--restart would forget batches still open at the provider ({ids}) and pay for "
                "their items twice; run without --restart to collect them first"
            )
        ledger.forget()


def _ledger_path(journal: Path | None) -> contextlib.AbstractContextManager[Path]:
    no_journal = (
        "no journal: the batches are followed in a temporary file, which a kill loses; "
        "give --journal PATH to make this job resumable"
    )
    return journal_file(journal, "quorum-batch-api-", no_journal)


def _ok_record(custom_id: str, reply: Reply) -> Record:
    return {
        "custom_id": custom_id,
        "status": "ok",
        "text": reply.text,
        "data": reply.data,
        "usage": reply.usage.as_json(),
        "cost": reply.cost,
        "error": None,
    }


def _error(custom_id: str, message: str) -> Record:
    return {
        "custom_id": custom_id,
        "status": "error",
        "text": None,
        "data": None,
        "usage": None,
        "cost": None,
        "error": message,
        "cached": False,
    }


def _output_record(custom_id: str, record: Record | None) -> Record | None:
    """A journaled result as ``quorum batch`` writes it; ``None`` if there is none yet."""
    return None if record is None else _as_output(record)


def _as_output(record: Record) -> Record:
    """A result with the fields ``quorum batch`` writes (``error`` as text)."""
    error = record.get("error")
    if isinstance(error, dict):
        error = f"{error.get('type')}: {error.get('message')}"
    fields = ("custom_id", "status", "text", "data", "usage", "cost")
    return {**{k: record.get(k) for k in fields}, "error": error, "cached": False}


def _summary(report: BatchReport, written: int, complete: bool, wall_s: float) -> Record:
    return {
        "results": written,
        "ok": report.succeeded,
        "error": report.failed,
        "complete": complete,
        "from_journal": report.from_journal,
        "batches_created": report.batches_created,
        "resubmitted": report.resubmitted,
        "online": report.online,
        "cost": round(report.cost, 6),
        "detached": report.detached,
        "wall_s": round(wall_s, 3),
    }
