"""``quorum translate TEXT|FILE --to fr,de,ja``: the chapter's translation exercise.

Languages in parallel; in each, three translator personas translate and then vote for
the best version. The Markdown report on stdout shows every translation with its
confidence and whether it had high consensus or was disputed; a language that failed is
reported and the others are kept (``--json``: the result as JSON). Target languages are
checked before any call. Exit status: 0 every language translated, 1 some failed, 2 none
or a usage error.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer

from quorum.apps.translate import TranslationWorkflow, language_names
from quorum.apps.translate_report import to_dict
from quorum.cli._feed import Feed, last_label
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
from quorum.engine.events import Event
from quorum.errors import ConfigError

EXAMPLES = examples(
    "quorum translate 'The meeting is moved to Tuesday.' --to fr,de,ja",
    "quorum translate notes.txt --to Spanish,pt-br --json -o translations.json",
)


@with_settings
def command(
    source: Annotated[
        str,
        typer.Argument(
            metavar="TEXT|FILE",
            help="The text, or a file holding it (an existing path is read); - reads stdin.",
            show_default=False,
        ),
    ],
    to: Annotated[
        str,
        typer.Option(
            "--to",
            "-t",
            help="Target languages, comma-separated: codes (fr, pt-br) or English names (French).",
            show_default=False,
        ),
    ],
    threshold: Annotated[
        float,
        typer.Option("--threshold", help="The winner's share of the votes that marks high consensus."),
    ] = 0.6,
    out: OutputOpt = None,
    *,
    settings: Settings,
) -> None:
    """Translate into several languages at once; in each, three translators vote on the best version."""
    if not 0 < threshold <= 1:
        fail(f"--threshold is the winner's share of the votes, in (0, 1], got {threshold:g}; e.g. 0.6")
    check_output(out)
    languages = [part.strip() for part in to.split(",") if part.strip()]
    code = execute(lambda: _translate(settings, source, languages, threshold, out), verbose=settings.verbose)
    raise typer.Exit(code)


async def _translate(
    settings: Settings, source: str, languages: list[str], threshold: float, out: Path | None
) -> int:
    text = read_text(source)
    try:
        language_names(languages)  # checked before connecting: a typo costs nothing
    except ConfigError as exc:
        fail(f"--to: {exc}")
    feed = Feed("translate", group=lambda event: last_label(event) or "languages", is_call=_in_a_language)
    async with settings.connect() as llm:
        workflow = TranslationWorkflow(
            llm=llm, consensus_threshold=threshold, max_concurrent=settings.concurrency
        )
        with feed, settings.in_force(on_event=feed.on_event):
            result = await workflow.run(text, languages)
    with output(out) as stream:
        stream.write(
            json.dumps(to_dict(result), ensure_ascii=False, indent=2) + "\n"
            if settings.json
            else result.report()
        )
    feed.close(result.summary)
    failed = len(result.failed)
    done = len(result.languages) - failed
    if failed:
        total = plural(len(result.languages), "language")
        warn(f"{done} of {total} translated; failed: {', '.join(result.failed)}")
    else:
        stderr.print(f"[dim]translated into {plural(done, 'language')}[/dim]")
    return exit_code(done, failed)


def _in_a_language(event: Event) -> bool:
    """The calls are the tasks of the runs labelled by language (translations, votes)."""
    return bool(event.run)


def read_text(source: str) -> str:
    """The text to translate: stdin for ``-``, an existing file's content, else the
    argument itself."""
    if source == "-":
        return sys.stdin.read()
    # A long or multi-line argument is text: asking the file system about it would fail.
    path = Path(source)
    if len(source) < 1024 and "\n" not in source and "\0" not in source and path.is_file():
        try:
            return path.read_text(encoding="utf-8")
        except UnicodeDecodeError as exc:
            fail(f"{source} is not UTF-8 text ({exc.reason} at byte {exc.start})")
    return source
