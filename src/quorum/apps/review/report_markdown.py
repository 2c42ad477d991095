"""The review as Markdown (GitHub-flavoured): for a pull-request comment, a job summary
or a file next to the code.

Sections: a summary table, the confirmed findings with their code, the potential
issues, the reviewers, failed calls and skipped files. Everything a model or a file
wrote is escaped, so a description cannot inject markup, links or HTML into the page.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

from quorum.apps.review.model import CodeReviewResult, FindingGroup
from quorum.apps.review.reference import ADVISORY_NOTE
from quorum.apps.review.report_json import Excerpt, category_title, excerpt, group_cwe, reviewer_names
from quorum.apps.review.report_text import files_line, format_cost, format_counts

_DESCRIPTION_CLIP = 160  # characters of a description in the potential-issues table
_LANGUAGES = {".py": "python", ".js": "javascript", ".ts": "typescript", ".go": "go", ".rb": "ruby"}


def to_markdown(result: CodeReviewResult) -> str:
    """The whole review as one Markdown document."""
    parts = [
        "# Security code review",
        _advisory(result),
        _summary(result),
        _confirmed(result),
        _potential(result),
        _reviewers(result),
        _failed_calls(result),
        _skipped(result),
    ]
    if result.summary.total:
        parts.append(f"---\n\n*Run: {_text(result.summary.line())}*")
    return "\n\n".join(p for p in parts if p) + "\n"


# -- sections --------------------------------------------------------------------------


def _advisory(result: CodeReviewResult) -> str:
    return f"> **{_text(ADVISORY_NOTE)}**" if result.advisory else ""


def _summary(result: CodeReviewResult) -> str:
    summary = result.summary
    risk = f"**{_text(result.risk_consensus.upper())}** (confidence {result.confidence:.0%})"
    if result.risk_from_reviewers:
        risk += f"; the most severe confirmed finding, reviewers said {_text(result.risk_from_reviewers)}"
    rows = [
        ("Overall risk", risk),
        ("Findings", _findings_line(result)),
        ("Files", _text(files_line(result))),
        ("Reviewers", str(len(reviewer_names(result)))),
    ]
    if result.model:
        rows.append(("Model", _code(result.model, table=True)))
    if summary.total:
        rows += [
            ("Calls", _calls_line(result)),
            ("Tokens", f"{summary.usage.prompt_tokens:,} in / {summary.usage.output_tokens:,} out"),
            ("Cost", format_cost(summary.cost)),
            ("Time", _time_line(result)),
        ]
    else:
        rows.append(("Review time", f"{result.execution_time:.2f} s"))
    return _table(("", ""), rows)


def _findings_line(result: CodeReviewResult) -> str:
    threshold = result.confirmation_threshold
    return (
        f"{len(result.confirmed)} confirmed, {len(result.potential)} potential "
        f"(confirmed at {threshold} or more votes)"
    )


def _calls_line(result: CodeReviewResult) -> str:
    summary = result.summary
    line = f"{summary.total}: {_text(format_counts(summary.counts))}"
    if summary.retries:
        line += f"; {summary.retries} retries"
    if summary.stopped:
        line += f"; stopped early: {_text(summary.stopped)}"
    return line


def _time_line(result: CodeReviewResult) -> str:
    summary = result.summary
    return (
        f"{summary.wall_s:.2f} s wall, {summary.busy_s:.2f} s of calls "
        f"({summary.time_saved_s:.2f} s saved by running them in parallel)"
    )


def _confirmed(result: CodeReviewResult) -> str:
    groups = result.confirmed
    if result.nothing_reviewed and result.skipped:
        return "## Nothing was reviewed\n\nEvery file was skipped (see below): this is not a pass."
    if not groups:
        return "## Confirmed findings (0)\n\nNo finding reached the confirmation threshold."
    total = len(reviewer_names(result))
    blocks = [_finding(result, n, g, total) for n, g in enumerate(groups, 1)]
    return f"## Confirmed findings ({len(groups)})\n\n" + "\n\n".join(blocks)


def _finding(result: CodeReviewResult, number: int, group: FindingGroup, reviewers: int) -> str:
    heading = f"### {number}. {group.severity.capitalize()}: {_weakness(group)}"
    lines = [
        f"{heading} in {_code(group.location)}",
        "",
        f"**Votes:** {group.vote_count} of {reviewers} reviewers: {_text(', '.join(group.reporters))}"
        + (f"; confirmed by rule: {_text(group.confirmed_by_rule)}" if group.confirmed_by_rule else ""),
        "",
    ]
    lines += [f"- **{_text(f.reviewer)}:** {_text(f.description)}" for f in group.findings]
    fixes = list(dict.fromkeys(f.recommendation.strip() for f in group.findings if f.recommendation.strip()))
    if fixes:
        lines += ["", "**Fix:** " + _text(fixes[0])]
        lines += [f"- {_text(fix)}" for fix in fixes[1:]]
    found = excerpt(result, group)
    if found is not None:
        lines += ["", _code_block(found, _language(result, group.path))]
    return "\n".join(lines)


def _potential(result: CodeReviewResult) -> str:
    groups = result.potential
    if not groups:
        return ""
    rows = [
        (
            group.severity,
            _weakness(group),
            _code(group.location, table=True),
            str(group.vote_count),
            _text(", ".join(group.reporters)),
            _text(_clip(group.findings[0].description)),
        )
        for group in groups
    ]
    header = ("Severity", "Weakness", "Location", "Votes", "Reported by", "Description")
    intro = f"Reported by fewer than {result.confirmation_threshold} reviewers: worth a look, not confirmed."
    return f"## Potential issues ({len(groups)})\n\n{intro}\n\n" + _table(header, rows)


def _reviewers(result: CodeReviewResult) -> str:
    votes = {v.reviewer_name: v for v in result.votes}
    rows = []
    for name in reviewer_names(result):
        vote = votes.get(name)
        calls = [r for r in result.reviews if r.reviewer == name]
        failed = sum(r.status != "ok" for r in calls)
        risk = "—" if vote is None else (vote.overall_risk if vote.success else "error")
        found = sum(name in g.reporters for g in result.groups)
        rows.append((_text(name), _text(risk), str(found), str(len(calls)), str(failed)))
    if not rows:
        return ""
    return "## Reviewers\n\n" + _table(("Reviewer", "Overall risk", "Findings", "Calls", "Failed"), rows)


def _failed_calls(result: CodeReviewResult) -> str:
    failed = [r for r in result.reviews if r.status != "ok"]
    failed_votes = [v for v in result.votes if not v.success]
    if failed:
        rows = [
            (_text(r.reviewer), _code(r.unit.key, table=True), r.status, _text(r.error or "(no message)"))
            for r in failed
        ]
        header = ("Reviewer", "Unit", "Status", "Error")
    elif failed_votes:  # a result built the chapter's way: only the votes know
        rows = [
            (_text(v.reviewer_name), "—", "error", _text(v.error or "(no message)")) for v in failed_votes
        ]
        header = ("Reviewer", "Unit", "Status", "Error")
    else:
        return ""
    return f"## Failed calls ({len(rows)})\n\n" + _table(header, rows)


def _skipped(result: CodeReviewResult) -> str:
    if not result.skipped:
        return ""
    ordered = result.unreadable + [s for s in result.skipped if not s.unreadable]
    rows = [(_code(s.path, table=True), _text(s.reason), _text(s.detail) or "—") for s in ordered]
    return f"## Skipped files ({len(rows)})\n\n" + _table(("File", "Reason", "Detail"), rows)


# -- Markdown building blocks ----------------------------------------------------------


def _weakness(group: FindingGroup) -> str:
    """``SQL injection (CWE-89)``, escaped."""
    cwe = group_cwe(group)
    return _text(category_title(group.category)) + (f" (CWE-{cwe})" if cwe is not None else "")


def _table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def _code_block(found: Excerpt, language: str) -> str:
    """Numbered lines in a fenced block; ``>`` marks the flagged lines. The fence is one
    backtick longer than any run of backticks in the code, so the code cannot close it."""
    width = len(str(found.end_line))
    body = [f"{'>' if flagged else ' '} {n:>{width}} | {text}" for n, text, flagged in found.numbered()]
    longest = max((len(run) for run in re.findall(r"`+", "\n".join(body))), default=0)
    fence = "`" * max(3, longest + 1)
    return "\n".join([f"{fence}{language}", *body, fence])


def _language(result: CodeReviewResult, path: str) -> str:
    unit = next((u for u in result.units if u.path == path), None)
    if unit is not None:
        return unit.language
    suffix = path[path.rfind(".") :] if "." in path else ""
    return _LANGUAGES.get(suffix, "")


def _text(text: str) -> str:
    """Plain text made inert: one line, Markdown punctuation and HTML escaped (GitHub
    renders some raw HTML, and a model's description may well contain tags)."""
    text = " ".join(text.split())
    text = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return re.sub(r"([\\`*_\[\]|#!~])", r"\\\1", text)


def _code(text: str, *, table: bool = False) -> str:
    """Inline code; a pipe must still be escaped inside a table cell (GFM splits cells first)."""
    text = " ".join(text.split())
    ticks = "`" * (max((len(run) for run in re.findall(r"`+", text)), default=0) + 1)
    if table:
        text = text.replace("|", "\\|")
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{ticks}{pad}{text}{pad}{ticks}"


def _clip(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= _DESCRIPTION_CLIP else text[: _DESCRIPTION_CLIP - 1] + "…"
