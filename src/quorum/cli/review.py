"""``quorum review PATH...``: security review by voting, the chapter's CodeReviewSystem.

Files and directories (``.gitignore`` honoured; binary, vendored, generated and oversized
files skipped and counted), or only what changed since a git revision (``--diff REV``).
Every reviewer reviews every unit of code; findings are grouped across reviewers and a
group is confirmed when ``--confirm`` reviewers report it. The chapter's text report on
stdout (or ``--json`` / ``--markdown``), plus ``--sarif FILE`` and ``--html FILE``;
``--fail-on SEVERITY`` exits 1 when a confirmed finding is at least that severe.
"""

from __future__ import annotations

import json
import subprocess
import sys
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Annotated

import typer

from quorum.apps.review.model import CodeReviewResult
from quorum.apps.review.report_html import to_html
from quorum.apps.review.report_json import dumps
from quorum.apps.review.report_markdown import to_markdown
from quorum.apps.review.report_sarif import to_sarif
from quorum.apps.review.report_text import format_review_report
from quorum.apps.review.system import DEFAULT_CONTEXT, CodeReviewSystem
from quorum.apps.review.taxonomy import SEVERITIES, severity_rank
from quorum.cli._feed import Feed
from quorum.cli.common import (
    Settings,
    execute,
    fail,
    stderr,
    with_settings,
)

DEFAULT_MAX_BYTES = 1_000_000


@with_settings
def command(
    paths: Annotated[list[str], typer.Argument(help="Files or directories to review.", show_default=False)],
    reviewers: Annotated[
        str | None,
        typer.Option(
            "--reviewers",
            "-r",
            help="Reviewer names (comma-separated, 'bandit' adds the static "
            "analyser) or a number: the first N of the five specialists.",
        ),
    ] = None,
    reviewers_file: Annotated[
        Path | None,
        typer.Option("--reviewers-file", help="TOML file of custom [[reviewer]] name/system prompts."),
    ] = None,
    confirm: Annotated[
        int, typer.Option("--confirm", min=1, help="Reviewers needed to confirm a finding.")
    ] = 2,
    diff: Annotated[
        str | None, typer.Option("--diff", help="Review only what changed since this git revision.")
    ] = None,
    context: Annotated[
        str, typer.Option("--context", help="What the code does, for the reviewers.")
    ] = DEFAULT_CONTEXT,
    max_bytes: Annotated[
        int, typer.Option("--max-bytes", min=1, help="Skip files larger than this.")
    ] = DEFAULT_MAX_BYTES,
    markdown: Annotated[
        bool, typer.Option("--markdown", help="Write Markdown to stdout instead of text.")
    ] = False,
    sarif: Annotated[
        Path | None, typer.Option("--sarif", help="Also write SARIF 2.1.0 to this file.")
    ] = None,
    html: Annotated[
        Path | None, typer.Option("--html", help="Also write a self-contained HTML report.")
    ] = None,
    fail_on: Annotated[
        str | None,
        typer.Option(
            "--fail-on",
            help="Exit 1 if a confirmed finding is at least this severe: low, medium, high or critical.",
        ),
    ] = None,
    *,
    settings: Settings,
) -> None:
    """Review code for security vulnerabilities with several specialist reviewers voting."""
    if settings.json and markdown:
        fail("--json and --markdown both choose stdout's format: pick one")
    if fail_on is not None and fail_on.lower() not in SEVERITIES:
        fail(f"--fail-on {fail_on!r} is not a severity; use one of {', '.join(SEVERITIES[1:])}")

    async def work() -> CodeReviewResult:
        feed = Feed("review", group=lambda event: event.task_id.split("@", 1)[0])
        system = CodeReviewSystem(
            llm=settings.connect(),
            confirmation_threshold=confirm,
            reviewers=_reviewer_spec(reviewers),
            reviewers_file=reviewers_file,
            concurrency=settings.concurrency,
            on_event=feed.on_event,
            budget=settings.make_budget(),
            timeout=settings.timeout,
        )
        with feed:
            result = await system.review_paths(paths, context=context, diff=diff, max_bytes=max_bytes)
        await system.llm.aclose()
        feed.close(result.summary)
        return result

    result = execute(work, verbose=settings.verbose)
    _write(result, settings, markdown=markdown, sarif=sarif, html=html)
    raise typer.Exit(_exit_code(result, fail_on))


def _reviewer_spec(text: str | None) -> str | int | None:
    if text is None:
        return None
    return int(text) if text.strip().isdigit() else text


def _write(
    result: CodeReviewResult, settings: Settings, *, markdown: bool, sarif: Path | None, html: Path | None
) -> None:
    if settings.json:
        sys.stdout.write(dumps(result) + "\n")
    elif markdown:
        sys.stdout.write(to_markdown(result))
    else:
        sys.stdout.write(format_review_report(result) + "\n")
    if sarif is not None:
        _save(sarif, _sarif_text(result))
    if html is not None:
        _save(html, to_html(result))


def _sarif_text(result: CodeReviewResult) -> str:
    document = to_sarif(result, tool_version=_version(), srcroot=_source_root())
    return json.dumps(document, indent=2)


def _save(path: Path, text: str) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    except OSError as exc:
        fail(f"cannot write {path}: {exc.strerror or exc}")
    stderr.print(f"[dim]wrote {path}[/dim]")


def _exit_code(result: CodeReviewResult, fail_on: str | None) -> int:
    if fail_on is None:
        return 0
    bar = severity_rank(fail_on)
    return 1 if any(severity_rank(g.severity) >= bar for g in result.confirmed) else 0


def _version() -> str:
    try:
        return version("quorum")
    except PackageNotFoundError:
        return "0+unknown"


def _source_root() -> Path:
    """The git work tree's root (SARIF paths are relative to it), else the current directory."""
    try:
        top = subprocess.run(
            ["git", "rev-parse", "--show-toplevel"], capture_output=True, text=True, check=True
        )
    except (OSError, subprocess.CalledProcessError):
        return Path.cwd()
    return Path(top.stdout.strip())
