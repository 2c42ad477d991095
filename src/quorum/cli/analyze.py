"""``quorum analyze FILE``: independent looks at one document, run at once (sectioning).

The chapter's four sections by default (Summary, Key Points, Sentiment, Questions), or
the ``[[section]]`` tables of ``--sections FILE.toml``, every template checked before any
call. Markdown on stdout, failed sections listed at the end (``--json``: the result as
JSON); the exit code is 1 if a section failed.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer

from quorum.apps.analyze import SECTIONS, analyze, load_sections, to_json, to_markdown
from quorum.cli._feed import Feed
from quorum.cli.common import (
    Settings,
    execute,
    fail,
    with_settings,
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
            'system = "..." (optional).',
        ),
    ] = None,
    *,
    settings: Settings,
) -> None:
    """Analyze a document from several angles at once: summary, key points, sentiment,
    reader questions, or your own sections."""
    code = execute(lambda: _analyze(settings, file, sections_file), verbose=settings.verbose)
    raise typer.Exit(code)


async def _analyze(settings: Settings, file: str, sections_file: Path | None) -> int:
    # Sections and document are read and checked before the connection is opened,
    # so a mistake in either costs nothing.
    sections = load_sections(sections_file) if sections_file is not None else list(SECTIONS)
    text = read_document(file)
    feed = Feed("analyze", group=lambda event: event.task_id)
    async with settings.connect() as llm:
        with feed:
            result = await analyze(
                text,
                llm=llm,
                sections=sections,
                concurrency=settings.concurrency,
                budget=settings.make_budget(),
                on_event=feed.on_event,
            )
    name = "stdin" if file == "-" else Path(file).name
    if settings.json:
        sys.stdout.write(json.dumps(to_json(result, source=name), ensure_ascii=False, indent=2) + "\n")
    else:
        sys.stdout.write(to_markdown(result, title=f"Analysis of {name}"))
    feed.close(result.summary)
    return 1 if result.failed else 0


def read_document(file: str) -> str:
    """The document's text: a file, or stdin for ``-``."""
    if file == "-":
        return sys.stdin.read()
    path = Path(file)
    if not path.is_file():
        fail(f"{file}: no such file (give a text file to analyze, or - to read stdin)")
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        fail(f"{file} is not UTF-8 text ({exc.reason} at byte {exc.start})")
