"""``quorum moderate``: a vote of moderators on every text, one verdict line per text.

Texts come from the arguments, from stdin (``-``, or no arguments with piped input: one
text per line), or from a JSON lines file (``--input FILE``: each line ``{"id": ...,
"text": ...}`` or a JSON string; ``--input -`` reads them from stdin). Verdicts are
written to stdout as JSON lines as their votes finish (``--ordered``: in input order);
``--json`` writes one JSON document at the end instead. A line that cannot be read is
reported on stderr with its number and gets an error verdict, and the other lines are
still judged; the exit code is 1 if any text failed.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, BinaryIO

import typer
from rich.markup import escape

from quorum.apps.moderate import (
    MODERATORS,
    OPTIONS,
    THRESHOLD,
    VOTES_LABEL,
    Item,
    Moderation,
    Verdict,
    item_from_json,
    item_from_line,
    moderate,
    unreadable,
)
from quorum.cli._feed import Feed, last_label
from quorum.cli.common import (
    Settings,
    execute,
    fail,
    stderr,
    with_settings,
)
from quorum.engine.connection import Connection
from quorum.engine.events import Event
from quorum.engine.outcome import Summary
from quorum.patterns.adaptive import Adaptive

Parse = Callable[[str, int], Item | None]
Items = list[Item] | AsyncIterator[Item]


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
    journal: Annotated[
        str | None,
        typer.Option("--journal", help="Record each verdict here; run again to judge only the rest."),
    ] = None,
    restart: Annotated[
        bool, typer.Option("--restart", help="Forget the --journal and judge every text.")
    ] = False,
    *,
    settings: Settings,
) -> None:
    """Moderate texts by a vote of the chapter's moderators; one JSON verdict per text."""
    source = choose_source(texts or [], input_file)
    job = Job(
        settings=settings,
        source=source,
        voters=voters,
        options=[o.strip() for o in options.split(",") if o.strip()],
        threshold=threshold,
        adaptive=Adaptive() if adaptive else None,
        ordered=ordered,
        journal=journal,
        restart=restart,
    )
    raise typer.Exit(execute(job.run, verbose=settings.verbose))


# -- where the texts come from ------------------------------------------------------------


@dataclass(frozen=True)
class Source:
    """The texts to moderate and a name for them in messages."""

    name: str
    items: Callable[[], Items]


def choose_source(texts: Sequence[str], input_file: str | None) -> Source:
    """Arguments, stdin or a JSON lines file; a mistake is caught before any call."""
    if input_file is not None and texts:
        fail("give texts as arguments or --input FILE, not both")
    if input_file == "-":
        return Source("stdin", lambda: read_items(_stdin, item_from_json, close=False))
    if input_file is not None:
        path = Path(input_file)
        if not path.is_file():
            fail(f"--input {input_file}: no such file (give a JSON lines file, or - for stdin)")
        return Source(path.name, lambda: read_items(lambda: path.open("rb"), item_from_json))
    if list(texts) == ["-"] or (not texts and not sys.stdin.isatty()):
        return Source("stdin", lambda: read_items(_stdin, item_from_line, close=False))
    if "-" in texts:
        fail("'-' reads the texts from stdin, so it must be the only argument")
    if not texts:
        fail("nothing to moderate: give texts as arguments, - to read them from stdin, or --input FILE.jsonl")
    if len(texts) == 1 and texts[0].endswith(".jsonl") and Path(texts[0]).is_file():
        fail(f"{texts[0]} is a file: to moderate its lines, write --input {texts[0]}")
    return Source("arguments", lambda: [Item(i, text) for i, text in enumerate(texts, start=1)])


def _stdin() -> BinaryIO:
    return sys.stdin.buffer


async def read_items(
    open_binary: Callable[[], BinaryIO], parse: Parse, *, close: bool = True
) -> AsyncIterator[Item]:
    """Items from lines read in a worker thread, so a slow pipe never stalls the calls in
    flight. Lines are decoded one at a time: a line that is not UTF-8 is reported as such,
    and the lines after it are still read."""
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
    finally:
        if close:
            stream.close()


# -- the run ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Job:
    settings: Settings
    source: Source
    voters: int
    options: list[str]
    threshold: float
    adaptive: Adaptive | None
    ordered: bool
    journal: str | None = None  # durable jobs
    restart: bool = False

    async def run(self) -> int:
        """Moderate every text, writing verdicts as they come; the exit code."""
        failures = 0
        collected: list[dict[str, Any]] = []
        feed = Feed("moderate", group=lambda e: last_label(e) or "texts", is_call=_is_vote)
        async with self.settings.connect() as llm:
            with feed:
                async with self._moderation(llm, feed) as verdicts:
                    async for verdict in verdicts:
                        failures += not verdict.ok
                        self._write(verdict, collected)
        if self.settings.json:
            _print_json({"verdicts": collected, "summary": _summary_dict(verdicts.summary)})
        stderr.print(f"[dim]{_texts_line(verdicts.summary)}[/dim]")
        feed.close(verdicts.summary)
        return 1 if failures else 0

    def _moderation(self, llm: Connection, feed: Feed) -> Moderation:
        return moderate(
            self.source.items(),
            llm=llm,
            voters=MODERATORS[: self.voters],
            options=self.options,
            threshold=self.threshold,
            adaptive=self.adaptive,
            ordered=self.ordered,
            concurrency=self.settings.concurrency,
            budget=self.settings.make_budget(),
            on_event=feed.on_event,
            journal=self.journal,
            restart=self.restart,
        )

    def _write(self, verdict: Verdict, collected: list[dict[str, Any]]) -> None:
        if not verdict.ok:
            place = f"line {verdict.line}" if verdict.line is not None else f"text {verdict.id}"
            stderr.print(
                f"[red]error:[/red] {escape(self.source.name)} {place}: {escape(str(verdict.error))}"
            )
        if self.settings.json:
            collected.append(verdict.to_dict())
        else:
            sys.stdout.write(json.dumps(verdict.to_dict(), ensure_ascii=False) + "\n")
            sys.stdout.flush()  # one line per verdict as it comes, even into a pipe


def _is_vote(event: Event) -> bool:
    return last_label(event) == VOTES_LABEL


def _texts_line(summary: Summary) -> str:
    by_status = ", ".join(f"{n} {status}" for status, n in sorted(summary.counts.items()))
    return f"moderated {summary.total} texts ({by_status or 'none'})"


def _summary_dict(summary: Summary) -> dict[str, Any]:
    return {
        "texts": summary.counts,
        "wall_s": round(summary.wall_s, 3),
        **summary.usage.as_json(),
        "cost": summary.cost,
        "stopped": summary.stopped,
    }


def _print_json(data: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(data, ensure_ascii=False, indent=2) + "\n")
