"""``quorum analyze FILE``: independent looks at one document, run at once (sectioning).

The chapter's four sections by default (Summary, Key Points, Sentiment, Questions), or
the ``[[section]]`` tables of ``--sections FILE.toml``, every template checked before any
call. Markdown on stdout, failed sections listed at the end (``--json``: the result as
JSON). Exit status: 0 every section done, 1 some failed, 2 none done or a usage error.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from quorum.apps.analyze import SECTIONS, analyze, load_sections, to_json, to_markdown
from quorum.cli._feed import Feed
from quorum.cli.common import (
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
    warn,
    with_settings,
)

EXAMPLES = examples(
    "quorum analyze report.txt",
    "cat notes.md | quorum analyze - --json",
    "quorum analyze report.txt --sections risks.toml -o analysis.md",
)


@with_settings
def command(
    file: Annotated[str, typer.Argument(help="The document to analyze; - reads stdin.", show_default=False)],
    sections_file: Annotated[
        Path | None,
        typer.Option(
            "--sections",
            "-s",
            help='TOML file of [[section]] tables: name = "...", prompt = "... {input} ...", '
            'system = "..." (optional). Default: the four sections summary, key points, '
            "sentiment and questions.",
            show_default=False,
        ),
    ] = None,
    out: OutputOpt = None,
    *,
    settings: Settings,
) -> None:
    """Analyze a document from several angles at once: summary, key points, sentiment,
    reader questions, or your own sections."""
    check_output(out)
    code = execute(lambda: _analyze(settings, file, sections_file, out), verbose=settings.verbose)
    raise typer.Exit(code)


async def _analyze(settings: Settings, file: str, sections_file: Path | None, out: Path | None) -> int:
    # Sections and document are read and checked before the connection is opened,
    # so a mistake in either costs nothing.
    sections = load_sections(sections_file) if sections_file is not None else list(SECTIONS)
    text = read_document(file)
    feed = Feed("analyze", group=lambda event: event.task_id)
    async with settings.connect() as llm:
        with feed, settings.in_force(on_event=feed.on_event):
            result = await analyze(text, llm=llm, sections=sections)
    name = "stdin" if file == "-" else Path(file).name
    with output(out) as stream:
        if settings.json:
            stream.write(json.dumps(to_json(result, source=name), ensure_ascii=False, indent=2) + "\n")
        else:
            stream.write(to_markdown(result, title=f"Analysis of {name}"))
    feed.close(result.summary)
    done, failed = len(result.successful), len(result.failed)
    if failed:
        warn(f"{done} of {plural(done + failed, 'section')} done; failed: {', '.join(result.failed)}")
    else:
        stderr.print(f"[dim]analyzed {escape(name)}: {plural(done, 'section')} done[/dim]")
    return exit_code(done, failed)


def read_document(file: str) -> str:
    """The document's text, from a file or from stdin (``-``), by one rule: text that
    is not UTF-8, or that holds NUL bytes, is refused wherever it comes from."""
    if file == "-":
        return decode_document(sys.stdin.buffer.read(), "stdin")
    path = Path(file)
    if path.is_dir():
        fail(f"{file} is a directory: give a text file to analyze, or - to read stdin")
    if not path.is_file():
        fail(f"{file}: no such file (give a text file to analyze, or - to read stdin)")
    return decode_document(path.read_bytes(), file)


def decode_document(raw: bytes, name: str) -> str:
    """``raw`` as text, or one line saying why it is not a text document."""
    if b"\0" in raw:
        fail(f"{name} is binary data (it holds NUL bytes), not a text document")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        fail(f"{name} is not UTF-8 text ({exc.reason} at byte {exc.start})")
