"""``quorum batch INPUT.jsonl -o OUTPUT.jsonl``: any JSONL of requests, resumable, cached.

Input lines are OpenAI Batch, Anthropic Message Batches or simple lines (see
``quorum.cli._batch_lines``); ``-`` reads stdin. One result line per input line:
``custom_id``, ``status`` (ok or error), ``text``, ``data`` (a structured answer),
``usage``, ``cost``, ``error`` and ``cached``. A line that cannot be read gets an error
result; the job goes on.

Every run writes the whole output again: results of lines finished in an earlier run
come from the journal (no call), the others are called. The output is written to
``OUTPUT.partial`` and renamed to ``OUTPUT`` once every line has its result, so an
``OUTPUT`` holds each line exactly once, whatever the kills (``--ordered``: in input
order). The journal is ``OUTPUT.journal`` unless ``--journal`` says otherwise.

``--ray`` sends the calls to Ray workers (``--workers N``, ``--concurrency`` calls each;
``--ray-address`` joins a running cluster, else a local one is started): this process
still reads the input, answers cache hits, keeps the journal and writes the output
(``quorum.engine.cluster.remote``), so a killed job resumes the same way.

The first Ctrl-C (or SIGTERM) stops starting lines and lets the calls in flight finish;
the second cancels them. Either way the journal holds everything that finished, the
exit status is 130, and the last line says how to resume.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import IO, Annotated, Any

import typer
from rich.markup import escape
from rich.progress import TaskID

from quorum import errors
from quorum.cli._batch_lines import Line, read_line
from quorum.cli.common import Settings, execute, fail, stderr, with_settings
from quorum.cli.progress import progress_bars
from quorum.cli.ray_options import (
    RayAddressOpt,
    RayOpt,
    WorkersOpt,
    cluster_down,
    items_in_flight,
    ray_executor,
)
from quorum.engine.connection import Connection, connect
from quorum.engine.jobs import Journaled, journaled
from quorum.engine.outcome import Outcome
from quorum.llm.registry import default_model, parse_model
from quorum.llm.types import Reply, Request
from quorum.store.cache import CacheHit, ResponseCache

Work = tuple[Line, str]  # a line and the model it goes to
Record = dict[str, Any]


class InvalidLine(errors.QuorumError):
    """An input line that cannot become a request."""


@with_settings
def command(
    input_path: Annotated[str, typer.Argument(metavar="INPUT", help="JSON lines of requests; - for stdin.")],
    output: Annotated[
        str, typer.Option("--output", "-o", help="Where the results go (JSON lines); - for stdout.")
    ],
    journal: Annotated[
        str | None,
        typer.Option("--journal", help="The job's journal (default: OUTPUT.journal beside the output)."),
    ] = None,
    restart: Annotated[
        bool, typer.Option("--restart", help="Forget the journal and call every line.")
    ] = False,
    ordered: Annotated[bool, typer.Option("--ordered", help="Write results in input order.")] = False,
    # --batch-api: the provider's batch API (quorum.cli.batch_api)
    batch_api: Annotated[
        bool,
        typer.Option("--batch-api", help="The provider's batch API: half the price, answers within 24 h."),
    ] = False,
    fallback_online: Annotated[
        bool,
        typer.Option("--fallback-online", help="With --batch-api: answer online what batches could not."),
    ] = False,
    deadline: Annotated[
        float | None,
        typer.Option("--deadline", min=1.0, help="With --batch-api: seconds the whole job may take."),
    ] = None,
    poll: Annotated[
        float,
        typer.Option("--poll", min=0.01, help="With --batch-api: most seconds between two polls of a batch."),
    ] = 60.0,
    # --ray: the calls on Ray workers (quorum.cli.ray_options)
    ray: RayOpt = False,
    ray_address: RayAddressOpt = None,
    workers: WorkersOpt = None,
    *,
    settings: Settings,
) -> None:
    """Run every request of a JSONL file; one result line each. Run it again to resume."""
    if input_path != "-" and not Path(input_path).is_file():
        fail(f"{input_path}: no such file (give a JSON lines file, or - for stdin)")
    if settings.json and output == "-":
        fail("--json writes the summary to stdout, so the results need -o FILE")
    if settings.model:
        try:
            parse_model(settings.model)
        except errors.ConfigError as exc:
            fail(str(exc))
    executor = ray_executor(settings, ray, ray_address, workers, batch_api=batch_api)
    if batch_api:
        from quorum.cli.batch_api import BatchApiJob  # the batch-API path of this command

        api_job = BatchApiJob(
            settings,
            input_path,
            output,
            _journal_path(journal, output),
            restart=restart,
            no_cache=not settings.cache,
            fallback_online=fallback_online,
            deadline=deadline,
            poll_s=poll,
        )
        raise typer.Exit(execute(api_job.run, verbose=settings.verbose))
    if fallback_online or deadline is not None:
        fail("--fallback-online and --deadline go with --batch-api")
    job = BatchJob(settings, input_path, output, _journal_path(journal, output), restart, ordered, executor)
    raise typer.Exit(execute(job.run, verbose=settings.verbose))


def _journal_path(journal: str | None, output: str) -> Path | None:
    if journal is not None:
        return Path(journal)
    return None if output == "-" else Path(output + ".journal")


# -- connections, one per model ----------------------------------------------------------------


class Models:
    """The model of each line (``--model`` for all, else the line's own, else the default)
    and one connection per model, made on first use."""

    def __init__(self, settings: Settings, cache: ResponseCache | None, executor: Any = None) -> None:
        self.settings = settings
        self.cache = cache
        self.executor = executor  # --ray: calls made by its workers (RemoteConnection)
        self._connections: dict[str, Connection] = {}
        self._remote: dict[str, Any] = {}
        self._overridden = False

    def choose(self, line: Line) -> str:
        if self.settings.model:
            if line.model and not self._overridden:
                self._overridden = True
                stderr.print(f"[dim]--model {self.settings.model} replaces the models the lines name[/dim]")
            return self.settings.model
        if line.model:
            return f"{line.provider}/{line.model}" if line.provider else line.model
        return default_model()[0]

    def get(self, model: str) -> Connection:
        made = self._connections.get(model)
        if made is None:
            provider, _ = parse_model(model)
            anthropic = provider == "anthropic"
            s = self.settings
            stderr.print(f"[dim]model: {escape(model)}[/dim]")
            made = connect(
                model,
                concurrency=s.concurrency,
                rpm=s.rpm,
                itpm=s.tpm if anthropic else None,
                tpm=None if anthropic else s.tpm,
                timeout=s.timeout if s.timeout is not None else 300.0,
                cache=self.cache,
            )
            self._connections[model] = made
        return made

    async def complete(self, model: str, request: Request) -> Reply:
        """``request``'s reply from ``model``: here, or with ``--ray`` from the workers."""
        if self.executor is None:
            return await self.get(model).complete(request)
        remote = self._remote.get(model)
        if remote is None:
            from quorum.engine.cluster.remote import RemoteConnection

            remote = self._remote[model] = RemoteConnection(self.executor, self.get(model))
        reply: Reply = await remote.complete(request)
        return reply

    async def aclose(self) -> None:
        for remote in self._remote.values():
            await remote.aclose()  # closes its connection too
        for model, connection in self._connections.items():
            if model not in self._remote:
                await connection.aclose()
        if self.executor is not None:
            self.executor.shutdown()


# -- where results go --------------------------------------------------------------------------


class Output:
    """Result lines to stdout, or to ``PATH.partial`` renamed to ``PATH`` once complete.

    The file is opened only once the journal is held, so a second process on the same job
    is refused before it can truncate the first one's output."""

    def __init__(self, path: str) -> None:
        self.path = None if path == "-" else Path(path)
        self.partial = None if self.path is None else self.path.with_name(self.path.name + ".partial")
        self._file: IO[str] | None = None
        self.written = 0

    def open(self) -> None:
        self._file = sys.stdout if self.partial is None else self.partial.open("w", encoding="utf-8")

    def write(self, record: Record) -> None:
        assert self._file is not None, "Output.open() first"
        self._file.write(json.dumps(record, ensure_ascii=False) + "\n")
        self.written += 1
        if self.partial is None:
            self._file.flush()  # a line per result as it comes, even into a pipe

    def close(self, *, complete: bool) -> None:
        if self._file is None:
            return
        self._file.flush()
        if self.partial is None or self.path is None:
            return
        os.fsync(self._file.fileno())
        self._file.close()
        if complete:
            os.replace(self.partial, self.path)


# -- progress ------------------------------------------------------------------------------------


class BatchProgress:
    """One bar on stderr (on a terminal only): lines done, cache hits, and the stop."""

    def __init__(self, total: int | None) -> None:
        self.enabled = stderr.is_terminal
        self._bar = progress_bars(stderr)
        self._task: TaskID = self._bar.add_task("batch", total=total, note="")

    def __enter__(self) -> BatchProgress:
        if self.enabled:
            self._bar.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.enabled:
            self._bar.stop()

    def show(self, done: int, note: str) -> None:
        if self.enabled:
            self._bar.update(self._task, completed=done, note=note)


# -- the job -------------------------------------------------------------------------------------


class BatchJob:
    def __init__(
        self,
        settings: Settings,
        input_path: str,
        output: str,
        journal: Path | None,
        restart: bool,
        ordered: bool,
        executor: Any = None,
    ) -> None:
        self.settings = settings
        self.input_path = input_path
        self.output = output
        self.journal = journal
        self.restart = restart
        self.ordered = ordered
        self.cache = ResponseCache() if settings.cache else None
        self.models = Models(settings, self.cache, executor)
        self.executor = executor
        self.fatal: errors.ConfigError | None = None  # --ray: no cluster, so no call can be made
        self._flow: Journaled[Work, Record] | None = None
        self.signals = 0
        self.source_done = False
        self.counts = {"ok": 0, "error": 0}

    async def run(self) -> int:
        """Every line's result written; the exit status."""
        started = time.perf_counter()
        out = Output(self.output)
        no_journal = "no journal (stdin to stdout): give --journal PATH to make this job resumable"
        with journal_file(self.journal, "quorum-batch-", no_journal, "dim") as journal_path:
            flow = journaled(
                self._call,
                self._lines(),
                journal_path,
                ids=lambda _i, work: work[0].id,
                fingerprint=lambda work: f"{work[0].fingerprint}|{work[1]}",
                restart=self.restart,
                concurrency=self._in_flight(),
                ordered=self.ordered,
                budget=self.settings.make_budget(),
            )
            try:
                await self._drive(flow, out)
            except asyncio.CancelledError:
                if self.signals < 2:
                    raise
                _uncancel()
            finally:
                complete = self.source_done and self.signals == 0 and not _stopped(flow)
                out.close(complete=complete)
                await self.models.aclose()
        if self.fatal is not None:
            raise self.fatal
        return self._close(flow, out, complete, time.perf_counter() - started)

    def _in_flight(self) -> int:
        if self.executor is None:
            return self.settings.concurrency
        return items_in_flight(self.executor, calls_per_item=1)

    async def _drive(self, flow: Journaled[Work, Record], out: Output) -> None:
        self._flow = flow
        with BatchProgress(_count_lines(self.input_path)) as progress, self._signals(flow):
            async with flow:
                out.open()
                async for outcome in flow:
                    record = outcome.value if outcome.ok and outcome.value else _error_record(outcome)
                    self.counts["ok" if record["status"] == "ok" else "error"] += 1
                    out.write(record)
                    progress.show(out.written, self._note(flow))

    def _note(self, flow: Journaled[Work, Record]) -> str:
        parts = []
        if flow.resumed:
            parts.append(f"{flow.resumed} from the journal")
        if self.cache is not None and self.cache.counts.hits:
            parts.append(self.cache.counts.line())
        if self.signals:
            parts.append(f"[yellow]stopping: {flow.in_flight} in flight[/yellow]")
        return " · ".join(parts)

    async def _call(self, work: Work) -> Record:
        line, model = work
        if line.error is not None or line.request is None:
            raise InvalidLine(line.error or f"line {line.number} has no request")
        try:
            reply = await self.models.complete(model, line.request)
        except errors.ConfigError as exc:
            if self.executor is not None and self.fatal is None and cluster_down(exc):
                self.fatal = exc  # every line would fail the same way: stop, say it once
                if self._flow is not None:
                    self._flow.stop()
            raise
        return {
            "custom_id": line.id,
            "status": "ok",
            "text": reply.text,
            "data": reply.data,
            "usage": reply.usage.as_json(),
            "cost": reply.cost,
            "error": None,
            "cached": isinstance(reply.raw, CacheHit),
        }

    async def _lines(self) -> AsyncIterator[Work]:
        seen: dict[str, int] = {}
        async for number, raw in read_input(self.input_path):
            line = read_line(number, raw)
            if line is None:
                continue
            first = seen.setdefault(line.id, number)
            if first != number:
                line = Line(
                    number,
                    f"{line.id}@line{number}",
                    line.fingerprint,
                    error=f"line {number}: custom_id {line.id!r} was already used on line {first}",
                )
            yield line, "" if line.error else self.models.choose(line)
        self.source_done = True

    @contextlib.contextmanager
    def _signals(self, flow: Journaled[Work, Record]) -> Iterator[None]:
        """First SIGINT/SIGTERM: stop starting lines. Second: cancel the calls in flight."""
        loop = asyncio.get_running_loop()
        main = asyncio.current_task()

        def on_signal() -> None:
            self.signals += 1
            if self.signals == 1:
                flow.stop()
                stderr.print(
                    f"[yellow]stopping: {flow.in_flight} in flight; Ctrl-C again cancels them[/yellow]"
                )
            elif main is not None:
                main.cancel()

        installed = []
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                loop.add_signal_handler(sig, on_signal)
                installed.append(sig)
            except (NotImplementedError, RuntimeError, ValueError):
                pass  # not the main thread (tests), or no signals here
        try:
            yield
        finally:
            for sig in installed:
                loop.remove_signal_handler(sig)

    def _close(self, flow: Journaled[Work, Record], out: Output, complete: bool, wall_s: float) -> int:
        summary = flow.summary
        spent = f"${summary.cost:.4f} spent" if summary.cost is not None else "no cost known"
        parts = [f"{self.counts['ok']} ok, {self.counts['error']} error", f"{summary.calls} calls", spent]
        if flow.resumed:
            parts.append(f"{flow.resumed} from the journal")
        if self.cache is not None:
            parts.append(self.cache.counts.line())
        where = self.output if out.path is None or complete else str(out.partial)
        stderr.print(
            f"[dim]batch: {out.written} results in {escape(where)} "
            f"({'; '.join(parts)}) in {wall_s:.1f}s[/dim]"
        )
        if self.settings.json:
            sys.stdout.write(json.dumps(self._summary(flow, out, complete, wall_s)) + "\n")
        if complete:
            return 1 if self.counts["error"] else 0
        resume = "run the same command again to resume"
        if self.journal is None:
            resume = "give --journal PATH to make a job resumable"
        if self.signals:
            stderr.print(f"[yellow]stopped: the journal holds every line that finished; {resume}[/yellow]")
            return 130
        why = summary.stopped or "the run ended early"
        stderr.print(f"[yellow]stopped early: {escape(why)}; {resume}[/yellow]")
        return 1

    def _summary(self, flow: Journaled[Work, Record], out: Output, complete: bool, wall_s: float) -> Record:
        counts = self.cache.counts if self.cache is not None else None
        return {
            "results": out.written,
            **self.counts,
            "complete": complete,
            "calls": flow.summary.calls,
            "cost": flow.summary.cost,
            "resumed": flow.resumed,
            "cache_hits": counts.hits if counts else 0,
            "cache_saved": round(counts.saved, 6) if counts else 0.0,
            "wall_s": round(wall_s, 3),
        }


def _error_record(outcome: Outcome[Record]) -> Record:
    return {
        "custom_id": outcome.id,
        "status": "error",
        "text": None,
        "data": None,
        "usage": outcome.usage.as_json(),
        "cost": outcome.cost,
        "error": outcome.error_message,
        "cached": False,
    }


def _stopped(flow: Journaled[Work, Record]) -> bool:
    return flow.summary.stopped is not None


@contextlib.contextmanager
def journal_file(path: Path | None, prefix: str, warning: str, style: str = "") -> Iterator[Path]:
    """The journal's path; without one (stdin to stdout), a temporary one, and ``warning``
    on stderr that a kill loses it."""
    if path is not None:
        yield path
        return
    stderr.print(warning, style=style, markup=False)
    with tempfile.TemporaryDirectory(prefix=prefix) as folder:
        yield Path(folder) / "journal"


async def read_input(input_path: str) -> AsyncIterator[tuple[int, bytes]]:
    """Numbered raw lines, read in a worker thread so a slow disk or pipe never stalls calls."""
    stream = sys.stdin.buffer if input_path == "-" else await asyncio.to_thread(Path(input_path).open, "rb")
    number = 0
    try:
        while True:
            if input_path == "-":
                raw = await asyncio.to_thread(stream.readline)
                chunk = [raw] if raw else []
            else:
                chunk = await asyncio.to_thread(stream.readlines, 1 << 20)
            if not chunk:
                return
            for raw in chunk:
                number += 1
                yield number, raw
    finally:
        if input_path != "-":
            stream.close()


def _count_lines(input_path: str) -> int | None:
    if input_path == "-":
        return None
    with Path(input_path).open("rb") as f:
        return sum(chunk.count(b"\n") for chunk in iter(lambda: f.read(1 << 20), b""))


def _uncancel() -> None:
    task = asyncio.current_task()
    if task is not None:
        task.uncancel()
