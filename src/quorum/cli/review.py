"""``quorum review PATH...``: security review by voting, the chapter's CodeReviewSystem.

Files and directories (``.gitignore`` honoured; binary, vendored, generated and oversized
files skipped and counted), or only what changed since a git revision (``--diff REV``).
Every reviewer reviews every unit of code; findings are grouped across reviewers and a
group is confirmed when ``--confirm`` reviewers report it. The chapter's text report on
stdout (or ``--json`` / ``--markdown``), plus ``--sarif FILE`` and ``--html FILE``
(checked for writability before the first call).

Exit status: 0 the review was done and nothing tripped; 1 some of it failed (a call, a
scan) or a file meant for review could not be read; 2 a usage error, or nothing was
reviewed at all (one line says why and how to proceed); 3 ``--fail-on`` was met by a
confirmed finding (named on stderr), which wins over 1; 130 interrupted. Every report is
written before the exit, failures and skipped files listed in it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from quorum.apps.review.model import CodeReviewResult, FindingGroup
from quorum.apps.review.report_html import to_html
from quorum.apps.review.report_json import dumps
from quorum.apps.review.report_markdown import to_markdown
from quorum.apps.review.report_sarif import to_sarif
from quorum.apps.review.report_text import files_line, format_counts, format_review_report, plural
from quorum.apps.review.reviewers import static_only
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
DEFAULT_CONFIRM = 2
EXIT_FAILED, EXIT_NOTHING_DONE, EXIT_FAIL_ON = 1, 2, 3


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
        int | None,
        typer.Option(
            "--confirm",
            min=1,
            help="Reviewers needed to confirm a finding; at most the number of reviewers. "
            "Default: 2, or 1 with a single reviewer.",
            show_default=False,
        ),
    ] = None,
    diff: Annotated[
        str | None, typer.Option("--diff", help="Review only what changed since this git revision.")
    ] = None,
    context: Annotated[
        str, typer.Option("--context", help="What the code does, for the reviewers.")
    ] = DEFAULT_CONTEXT,
    max_bytes: Annotated[
        int,
        typer.Option(
            "--max-file-size",
            "--max-bytes",
            min=1,
            help="Skip files larger than this many bytes (a guard against data files; large "
            "source files are cut into units like any other).",
        ),
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
            help="Exit 3 if a confirmed finding is at least this severe: low, medium, high or critical.",
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
    for option, target in (("--sarif", sarif), ("--html", html)):
        if target is not None:
            _check_writable(option, target)

    async def work() -> CodeReviewResult:
        feed = Feed("review", group=lambda event: event.task_id.split("@", 1)[0])
        system = CodeReviewSystem(
            llm=settings.connect(announce=not static_only(reviewers)),
            confirmation_threshold=confirm or 1,
            reviewers=_reviewer_spec(reviewers),
            reviewers_file=reviewers_file,
            concurrency=settings.concurrency,
            on_event=feed.on_event,
            budget=settings.make_budget(),
            timeout=settings.timeout,
        )
        system.confirmation_threshold = _threshold(confirm, system)
        with feed:
            result = await system.review_paths(paths, context=context, diff=diff, max_bytes=max_bytes)
        await system.llm.aclose()
        feed.close(result.summary)
        return result

    result = execute(work, verbose=settings.verbose)
    _write(result, settings, markdown=markdown, sarif=sarif, html=html)
    raise typer.Exit(_verdict(result, fail_on))


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
    document = to_sarif(result, tool_version=_version(), srcroot=_source_root(), cwd=Path(os.getcwd()))
    return json.dumps(document, indent=2)


def _save(path: Path, text: str) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    except OSError as exc:
        fail(f"cannot write {path}: {exc.strerror or exc}")
    stderr.print(f"[dim]wrote {path}[/dim]")


def _check_writable(option: str, path: Path) -> None:
    """Fail before the first (paid) call if ``path`` cannot be written: a directory, a
    read-only file or a folder that cannot be created."""
    if path.is_dir():
        fail(f"{option} {path}: is a directory; give a file name, e.g. {path / 'report'}")
    existed = path.exists()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("a", encoding="utf-8"):
            pass
    except OSError as exc:
        fail(f"{option} {path}: cannot be written ({exc.strerror or exc}); choose another path")
    if not existed:
        path.unlink(missing_ok=True)


def _threshold(confirm: int | None, system: CodeReviewSystem) -> int:
    """``--confirm``, or its default; refused above the number of voters, where it could
    never confirm anything."""
    voters = len(system.selection.llm) + len(system.selection.static)
    if confirm is None:
        return min(DEFAULT_CONFIRM, voters)
    if confirm > voters:
        names = ", ".join([r.name for r in system.selection.llm] + system.selection.static)
        fail(
            f"--confirm {confirm} needs {confirm} reviewers to agree, but only {voters} review "
            f"({names}): lower --confirm or add reviewers with --reviewers"
        )
    return confirm


def _verdict(result: CodeReviewResult, fail_on: str | None) -> int:
    """The exit status (see the module docs), with its reason on stderr."""
    stderr.print(f"[dim]files: {escape(files_line(result))}[/dim]", markup=True, highlight=False)
    if result.nothing_reviewed:
        fail(_nothing_reviewed(result), code=EXIT_NOTHING_DONE)
    failures = _failures_line(result)
    if failures:
        stderr.print(f"[yellow]review incomplete:[/yellow] {escape(failures)}", markup=True, highlight=False)
    tripped = _tripped(result, fail_on)
    if tripped:
        stderr.print(f"[red]--fail-on {fail_on}:[/red] {escape(tripped)}", markup=True, highlight=False)
        return EXIT_FAIL_ON
    return EXIT_FAILED if failures else 0


def _nothing_reviewed(result: CodeReviewResult) -> str:
    if not result.skipped:
        return (
            "nothing was reviewed: no source files under the paths given; name files or directories of code"
        )
    first = (result.unreadable or result.skipped)[0]
    counts = format_counts(result.skipped_counts())
    return (
        f"nothing was reviewed: {plural(len(result.skipped), 'file')} skipped ({counts}); "
        f"{first.path}: {first.describe()}"
    )


def _failures_line(result: CodeReviewResult) -> str:
    """``2 of 40 calls failed; 1 file could not be read (too large)``, or ""."""
    parts = []
    failed = result.failed_reviews
    if failed:
        total = len(result.reviews)
        parts.append(f"{len(failed)} of {total} reviews (calls and scans) failed, each listed in the report")
    unread = result.unreadable
    if unread:
        counts = format_counts({s.reason: sum(u.reason == s.reason for u in unread) for s in unread})
        parts.append(f"{plural(len(unread), 'file')} could not be read ({counts})")
    return "; ".join(parts)


def _tripped(result: CodeReviewResult, fail_on: str | None) -> str:
    """Which confirmed finding met ``--fail-on`` (the most severe), or ""."""
    if fail_on is None:
        return ""
    bar = severity_rank(fail_on)
    over = [g for g in result.confirmed if severity_rank(g.severity) >= bar]
    if not over:
        return ""
    worst = max(over, key=lambda g: severity_rank(g.severity))
    more = f", and {len(over) - 1} more" if len(over) > 1 else ""
    return f"{_describe(worst)}{more}"


def _describe(group: FindingGroup) -> str:
    cwe = f" (CWE-{group.cwe})" if group.cwe is not None else ""
    how = group.confirmed_by_rule or f"confirmed by {plural(group.vote_count, 'reviewer')}"
    return f"{group.severity} {group.category.value}{cwe} at {group.location}, {how}"


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
