"""``quorum moderate``: a vote of moderators on every text, one verdict line per text.

Texts come from the arguments, from stdin (``-``, or no arguments with piped input: one
text per line), or from a JSON lines file (``--input FILE``: each line ``{"id": ...,
"text": ...}`` or a JSON string; ``--input -`` reads them from stdin). Verdicts are
written to stdout as JSON lines as their votes finish (``--ordered``: in input order);
``--json`` writes one JSON document at the end instead. With ``--batch-api`` every
moderator's vote on every text goes out first as provider batches (half the price,
answers within 24 hours; ``quorum.cli.batch_api``), and the verdicts are written once the
batches have answered. With ``--ray`` the moderators' calls are made by Ray workers
(``--workers N``, ``--ray-address``; ``quorum.cli.ray_options``) while the votes, the
journal and the verdicts stay in this process. Every text gets a verdict: a
line that cannot be read gets an error verdict naming its line (and a line on stderr)
while the other lines are still judged; texts left when the run stops early
(``--budget``) get a ``skipped`` verdict each; blank lines are counted. Exit status: 0
every text judged, 1 some not (the closing line counts them by status), 2 none judged or
a usage error.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, BinaryIO, TextIO

import typer
from rich.markup import escape

from quorum.apps.moderate import (
    MODERATORS,
    NO_ADAPTIVE_BATCHES,
    OPTIONS,
    THRESHOLD,
    VOTES_LABEL,
    Item,
    Moderation,
    Verdict,
    item_from_json,
    item_from_line,
    moderate,
    plan_votes,
    unreadable,
)
from quorum.apps.moderate_journal import ballot_fingerprint
from quorum.apps.totals import SCHEMA_VERSION, stopped_cause, totals
from quorum.cli._feed import Feed, last_label
from quorum.cli.batch_api import (
    BatchApiOpt,
    BatchMode,
    DeadlineOpt,
    FallbackOnlineOpt,
    PollOpt,
    batch_calls,
    batch_facts,
    batch_mode,
    closing_line,
    resume_command,
)
from quorum.cli.common import (
    Exit,
    OutputOpt,
    Settings,
    check_output,
    examples,
    execute,
    exit_code,
    fail,
    output,
    plural,
    stderr,
    with_settings,
)
from quorum.cli.ray_options import RayAddressOpt, RayOpt, WorkersOpt, calls_on, items_in_flight, ray_executor
from quorum.engine.batch_calls import Record
from quorum.engine.batches import BatchReport
from quorum.engine.connection import Connection
from quorum.engine.events import Event
from quorum.engine.outcome import Summary
from quorum.patterns.adaptive import Adaptive
from quorum.patterns.voting import Voter
from quorum.store.journal import Journal

if TYPE_CHECKING:
    from quorum.engine.cluster import RayExecutor

Parse = Callable[[str, int], Item | None]
Items = Iterable[Item] | AsyncIterator[Item]

EXAMPLES = examples(
    "quorum moderate 'Nice post, thanks!' 'You have rocks for brains'",
    "quorum moderate --input comments.jsonl --budget 0.50 -o verdicts.jsonl",
    "cat comments.txt | quorum moderate --adaptive --json",
    "quorum moderate --input backlog.jsonl --batch-api --journal backlog.db -o verdicts.jsonl",
)


@with_settings
def command(
    texts: Annotated[
        list[str] | None,
        typer.Argument(
            help="Texts to moderate. '-' reads them from stdin, one per line (also the default "
            "when stdin is piped).",
            show_default=False,
        ),
    ] = None,
    input_file: Annotated[
        str | None,
        typer.Option(
            "--input",
            "-i",
            help='JSON lines to moderate: {"id": ..., "text": ...} or a JSON string per line; - for stdin.',
            show_default=False,
        ),
    ] = None,
    voters: Annotated[
        int,
        typer.Option(
            "--voters", "-n", min=1, max=len(MODERATORS), help="How many of the five moderators vote."
        ),
    ] = len(MODERATORS),
    options: Annotated[str, typer.Option("--options", help="The choices, comma-separated.")] = ",".join(
        OPTIONS
    ),
    threshold: Annotated[
        float, typer.Option("--threshold", help="The winner's share of the votes that counts as consensus.")
    ] = THRESHOLD,
    adaptive: Annotated[
        bool, typer.Option("--adaptive", help="Stop each vote once its winner is settled (fewer calls).")
    ] = False,
    ordered: Annotated[bool, typer.Option("--ordered", help="Write verdicts in input order.")] = False,
    out: OutputOpt = None,
    journal: Annotated[
        str | None,
        typer.Option("--journal", help="Record each verdict here; run again to judge only the rest."),
    ] = None,
    restart: Annotated[
        bool, typer.Option("--restart", help="Forget the --journal and judge every text.")
    ] = False,
    batch_api: BatchApiOpt = False,
    fallback_online: FallbackOnlineOpt = False,
    deadline: DeadlineOpt = None,
    poll: PollOpt = 60.0,
    ray: RayOpt = False,
    ray_address: RayAddressOpt = None,
    workers: WorkersOpt = None,
    *,
    settings: Settings,
) -> None:
    """Moderate texts by a vote of the chapter's moderators; one JSON verdict per text."""
    if not 0 < threshold <= 1:
        fail(f"--threshold is the winner's share of the votes, in (0, 1], got {threshold:g}; e.g. 0.6")
    batch = batch_mode(batch_api, fallback_online, deadline, poll, budget=settings.budget)
    if batch is not None and adaptive:
        fail(NO_ADAPTIVE_BATCHES)
    check_output(out)
    source = choose_source(texts or [], input_file)
    executor = ray_executor(settings, ray, ray_address, workers, batch_api=batch_api)
    job = Job(
        settings=settings,
        source=source,
        voters=voters,
        options=[o.strip() for o in options.split(",") if o.strip()],
        threshold=threshold,
        adaptive=Adaptive() if adaptive else None,
        ordered=ordered,
        out=out,
        journal=journal,
        restart=restart,
        batch=batch,
        executor=executor,
    )
    raise typer.Exit(execute(job.run, verbose=settings.verbose))


# -- where the texts come from ------------------------------------------------------------


@dataclass(frozen=True)
class Source:
    """The texts to moderate and a name for them in messages. ``items`` is given a list
    that receives the numbers of the blank lines it passes over."""

    name: str
    items: Callable[[list[int]], Items]


def choose_source(texts: Sequence[str], input_file: str | None) -> Source:
    """Arguments, stdin or a JSON lines file; a mistake is caught before any call."""
    if input_file is not None and texts:
        fail("give texts as arguments or --input FILE, not both")
    if input_file == "-":
        return Source("stdin", lambda blank: read_items(_stdin, item_from_json, close=False, blank=blank))
    if input_file is not None:
        path = Path(input_file)
        if path.is_dir():
            fail(f"--input {input_file} is a directory: give a JSON lines file, or - for stdin")
        if not path.is_file():
            fail(f"--input {input_file}: no such file (give a JSON lines file, or - for stdin)")
        return Source(
            path.name, lambda blank: read_items(lambda: path.open("rb"), item_from_json, blank=blank)
        )
    if list(texts) == ["-"] or (not texts and not sys.stdin.isatty()):
        return Source("stdin", lambda blank: read_items(_stdin, item_from_line, close=False, blank=blank))
    if "-" in texts:
        fail("'-' reads the texts from stdin, so it must be the only argument")
    if not texts:
        fail("nothing to moderate: give texts as arguments, - to read them from stdin, or --input FILE.jsonl")
    if len(texts) == 1 and texts[0].endswith(".jsonl") and Path(texts[0]).is_file():
        fail(f"{texts[0]} is a file: to moderate its lines, write --input {texts[0]}")
    return Source("arguments", lambda _blank: [Item(i, text) for i, text in enumerate(texts, start=1)])


def _stdin() -> BinaryIO:
    return sys.stdin.buffer


async def read_items(
    open_binary: Callable[[], BinaryIO], parse: Parse, *, close: bool = True, blank: list[int] | None = None
) -> AsyncIterator[Item]:
    """Items from lines read in a worker thread, so a slow pipe never stalls the calls in
    flight. Lines are decoded one at a time: a line that is not UTF-8 is reported as such,
    and the lines after it are still read. A blank line is no text: its number goes to
    ``blank``."""
    stream = open_binary()
    number = 0
    try:
        while raw := await asyncio.to_thread(stream.readline):
            number += 1
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                yield unreadable(number, f"not UTF-8 text ({exc.reason} at byte {exc.start})")
                continue
            item = parse(line, number)
            if item is not None:
                yield item
            elif blank is not None:
                blank.append(number)
    finally:
        if close:
            stream.close()


class Pulled:
    """The items, counted as the moderation pulls them, so that those it never reached
    (the run stopped first) can still be pulled afterwards and reported skipped."""

    def __init__(self, items: Items) -> None:
        self._items = items
        self.count = 0
        self._iterator = self._all()

    async def _all(self) -> AsyncIterator[Item]:
        if isinstance(self._items, AsyncIterator):
            async for item in self._items:
                self.count += 1
                yield item
        else:
            for item in self._items:
                self.count += 1
                yield item

    def __aiter__(self) -> AsyncIterator[Item]:
        return self._iterator

    async def rest(self) -> AsyncIterator[tuple[int, Item]]:
        """The items not yet pulled, with their input positions (from 0)."""
        async for item in self._iterator:
            yield self.count - 1, item


# -- the run ----------------------------------------------------------------------------------


@dataclass
class Job:
    settings: Settings
    source: Source
    voters: int
    options: list[str]
    threshold: float
    adaptive: Adaptive | None
    ordered: bool
    out: Path | None = None
    statuses: Counter[str] = field(default_factory=Counter)
    blank: list[int] = field(default_factory=list)
    collected: list[dict[str, Any]] = field(default_factory=list)
    journal: str | None = None  # durable jobs
    restart: bool = False
    batch: BatchMode | None = None  # --batch-api
    answers: Mapping[str, Record] | None = None  # the batch results the votes are counted from
    batch_report: BatchReport | None = None
    executor: RayExecutor | None = None  # --ray: the votes cast on Ray workers

    async def run(self) -> int:
        """Moderate every text, writing verdicts as they come; the exit code."""
        feed = Feed("moderate", group=lambda e: last_label(e) or "texts", is_call=_is_vote)
        texts: Items = self.source.items(self.blank)
        with output(self.out) as stream:
            async with calls_on(self.executor, self.settings.connect()) as llm:
                if self.batch is not None:
                    texts = [item async for item in Pulled(texts)]  # a batch needs them all first
                    if await self._batches(llm, texts, self.batch):
                        return int(Exit.INTERRUPTED)  # detached: the same command resumes
                items = Pulled(texts)
                with feed, self.settings.in_force(on_event=feed.on_event):
                    async with self._moderation(llm, items) as verdicts:
                        async for verdict in verdicts:
                            if verdict.status == "skipped":
                                verdict.error = f"skipped: {_cause(verdicts.summary)}"
                            self._write(verdict, stream)
                reason = _cause(verdicts.summary)
                async for position, item in items.rest():
                    self._write(_skipped(item, position, reason), stream)
            if self.settings.json:
                summary: dict[str, Any] = {"texts": dict(self.statuses), "blank_lines": len(self.blank)}
                if self.batch_report is not None:
                    summary["batch"] = batch_facts(self.batch_report)
                document = {
                    "schema_version": SCHEMA_VERSION,
                    "verdicts": self.collected,
                    "summary": summary | totals(verdicts.summary),
                }
                stream.write(json.dumps(document, ensure_ascii=False, indent=2) + "\n")
        stderr.print(f"[dim]{escape(self._texts_line())}[/dim]")
        feed.close(verdicts.summary)
        ok = self.statuses["ok"]
        return exit_code(ok, sum(self.statuses.values()) - ok)

    async def _batches(self, llm: Connection, items: list[Item], batch: BatchMode) -> bool:
        """Every vote not yet journaled, through the batch API; whether the run detached."""
        voters = MODERATORS[: self.voters]
        done = await self._journaled(items, voters)
        todo = [item for item in items if str(item.id) not in done]
        requests = await plan_votes(todo, llm=llm, voters=voters, options=self.options)
        journal = Path(self.journal) if self.journal is not None else None
        report, self.answers = await batch_calls(
            llm, requests, journal, restart=self.restart, **batch.options()
        )
        self.batch_report = report
        stderr.print(f"moderate: {closing_line(report, resume_command())}", markup=False, highlight=False)
        return report.detached

    async def _journaled(self, items: list[Item], voters: Sequence[Voter]) -> set[str]:
        """Ids of the texts whose verdicts the --journal holds: no batch asks them again."""
        if self.journal is None or self.restart:
            return set()
        journal = Journal(self.journal)
        try:
            return {
                str(item.id)
                for item in items
                if item.problem is None
                and journal.check(
                    str(item.id), ballot_fingerprint(item.text, voters, self.options, self.threshold)
                )
            }
        finally:
            await journal.aclose()

    def _moderation(self, llm: Connection, items: Pulled) -> Moderation:
        return moderate(
            items,
            llm=llm,
            voters=MODERATORS[: self.voters],
            options=self.options,
            threshold=self.threshold,
            adaptive=self.adaptive,
            ordered=self.ordered,
            journal=self.journal,
            restart=self.restart,
            answers=self.answers,
            concurrency=self._texts_in_flight(),
        )

    def _texts_in_flight(self) -> int | None:
        """With --ray, texts enough that their votes fill every worker; else the default."""
        return None if self.executor is None else items_in_flight(self.executor, self.voters)

    def _write(self, verdict: Verdict, stream: TextIO) -> None:
        self.statuses[verdict.status] += 1
        record = verdict.to_dict()
        if not verdict.ok:
            place = f"line {verdict.line}" if verdict.line is not None else f"text {verdict.id}"
            why = escape(str(record["error"]))
            stderr.print(f"[red]{verdict.status}:[/red] {escape(self.source.name)} {place}: {why}")
        if self.settings.json:
            self.collected.append(record)
        else:
            stream.write(json.dumps(record, ensure_ascii=False) + "\n")
            stream.flush()  # one line per verdict as it comes, even into a pipe

    def _texts_line(self) -> str:
        total = sum(self.statuses.values())
        by_status = ", ".join(f"{n} {status}" for status, n in sorted(self.statuses.items()))
        line = f"moderated {plural(total, 'text')} ({by_status or 'none'})"
        if self.blank:
            line += f"; {plural(len(self.blank), 'blank line')} passed over"
        return line


def _cause(summary: Summary) -> str:
    return stopped_cause(summary) or "the run stopped before this text"


def _skipped(item: Item, position: int, reason: str) -> Verdict:
    """The verdict of a text the run never reached."""
    if item.problem is not None:
        return Verdict(id=item.id, index=position, status="error", line=item.line, error=item.problem)
    return Verdict(id=item.id, index=position, status="skipped", line=item.line, error=f"skipped: {reason}")


def _is_vote(event: Event) -> bool:
    return last_label(event) == VOTES_LABEL
