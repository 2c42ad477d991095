"""The review as plain text for a terminal: the chapter's ``format_review_report``.

The layout and headings are the chapter's (SECURITY CODE REVIEW REPORT, Overall Risk,
Confidence, Review Time, Reviewer Assessments, CONFIRMED VULNERABILITIES, POTENTIAL
ISSUES). It reads ``result.confirmed_vulnerabilities``, the chapter's list of dicts, so a
result built the chapter's way renders too; what quorum adds (CWE ids, files and skips,
failed calls, the run summary) appears only where the result carries it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from quorum.apps.review.model import CodeReviewResult
from quorum.apps.review.reference import ADVISORY_NOTE

_WIDE = "=" * 60
_NARROW = "-" * 40
_CLIP = 200  # the chapter's limit on a description or a fix in this report
NOTHING_REVIEWED = "NOTHING WAS REVIEWED: every file was skipped (see SKIPPED FILES); this is not a pass"


def format_review_report(result: CodeReviewResult) -> str:
    """Format the review result as a readable report."""
    lines = [_WIDE, "SECURITY CODE REVIEW REPORT", _WIDE, ""]
    lines += _overall(result)
    if result.advisory:
        lines += [ADVISORY_NOTE, ""]
    lines += _assessments(result)
    lines += _failed_calls(result)
    if result.nothing_reviewed and result.skipped:
        lines += [_NARROW, NOTHING_REVIEWED, ""]
    else:
        lines += _confirmed(result.confirmed_vulnerabilities)
    lines += _potential(result.confirmed_vulnerabilities)
    lines += _skipped(result)
    if result.summary.total:
        lines += [_NARROW, f"Run: {result.summary.line()}"]
    lines += ["", _WIDE]
    return "\n".join(lines)


def format_cost(cost: float | None) -> str:
    """Dollars with enough digits for the fractions of a cent small calls cost."""
    return "unknown" if cost is None else f"${cost:.4f}"


def format_counts(counts: Mapping[str, int]) -> str:
    """``{"binary": 2, "vendored": 1}`` → ``2 binary, 1 vendored`` (largest first)."""
    ordered = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
    return ", ".join(f"{n} {what}" for what, n in ordered)


def skipped_count(result: CodeReviewResult, what: str = "") -> str:
    """``2 skipped (1 too large, 1 vendored)`` (with ``what="skipped"``): the files
    skipped, by reason."""
    if not result.skipped:
        return "0"
    counted = f"{len(result.skipped)} {what}".rstrip()
    return f"{counted} ({format_counts(result.skipped_counts())})"


def files_line(result: CodeReviewResult) -> str:
    """``3 reviewed, 2 skipped (1 too large, 1 vendored)``: the closing count of files."""
    line = f"{len(result.files)} reviewed"
    return f"{line}, {skipped_count(result, 'skipped')}" if result.skipped else line


def _overall(result: CodeReviewResult) -> list[str]:
    risk = result.risk_consensus.upper()
    if result.risk_from_reviewers and result.risk_from_reviewers != result.risk_consensus:
        risk += f" (the most severe confirmed finding; reviewers said {result.risk_from_reviewers.upper()})"
    lines = [
        f"Overall Risk: {risk}",
        f"Confidence: {result.confidence:.0%}",
        f"Review Time: {result.execution_time:.2f}s",
    ]
    if result.model:
        advisory = " (advisory: see the note below)" if result.advisory else ""
        lines.append(f"Model: {result.model}{advisory}")
    # A result built the chapter's way knows nothing of files: say nothing rather than "0".
    if result.files or result.skipped:
        lines.append(f"Files Reviewed: {len(result.files)}")
    if result.skipped:
        lines.append(f"Files Skipped: {skipped_count(result)}")
    return [*lines, ""]


def _assessments(result: CodeReviewResult) -> list[str]:
    lines = [_NARROW, "Reviewer Assessments:"]
    for vote in result.votes:
        if vote.success:
            count = len(vote.found_vulnerabilities)
            lines.append(f"  {vote.reviewer_name}: {vote.overall_risk} ({plural(count, 'issue')})")
        else:
            lines.append(f"  {vote.reviewer_name}: ERROR - {_one_line(vote.error)}")
    return [*lines, ""]


def _failed_calls(result: CodeReviewResult) -> list[str]:
    """Every call that did not succeed, with its error: a reviewer whose other calls
    succeeded still has holes in its coverage, and the reader should see where."""
    failed = [r for r in result.reviews if r.status != "ok"]
    if not failed:
        return []
    lines = [_NARROW, f"Failed Calls ({len(failed)}):"]
    for review in failed:
        lines.append(f"  {review.reviewer} on {review.unit.key}: {review.status} - {_one_line(review.error)}")
    return [*lines, ""]


def _confirmed(groups: list[dict[str, Any]]) -> list[str]:
    confirmed = [v for v in groups if v.get("confirmed")]
    if not confirmed:
        return [_NARROW, "No confirmed vulnerabilities (threshold not met)", ""]
    lines = [_NARROW, f"CONFIRMED VULNERABILITIES ({len(confirmed)}):", ""]
    for i, vuln in enumerate(confirmed, 1):
        reporters = ", ".join(dict.fromkeys(vuln.get("reporters", [])))
        votes = f"   Votes: {plural(vuln['vote_count'], 'reviewer')}"
        votes += f" ({reporters})" if reporters else ""
        if vuln.get("confirmed_by_rule"):
            votes += f"; confirmed by rule: {vuln['confirmed_by_rule']}"
        lines += [
            f"{i}. [{str(vuln['severity']).upper()}] {_type(vuln)}",
            f"   Location: {vuln['location']}",
            votes,
            f"   Description: {_clip(vuln.get('descriptions'))}",
            f"   Fix: {_clip(vuln.get('recommendations'))}",
            "",
        ]
    return lines


def _potential(groups: list[dict[str, Any]]) -> list[str]:
    potential = [v for v in groups if not v.get("confirmed")]
    if not potential:
        return []
    lines = [_NARROW, f"POTENTIAL ISSUES ({len(potential)}) - needs further review:"]
    for vuln in potential:
        votes = vuln.get("vote_count", 0)
        lines.append(
            f"  - [{vuln['severity']}] {_type(vuln)} at {vuln['location']} ({votes} vote{'s' * (votes != 1)})"
        )
    return [*lines, ""]


SKIPPED_SHOWN = 50  # a directory's ignored files can run to thousands; --json lists them all


def _skipped(result: CodeReviewResult) -> list[str]:
    """Every file left out and why, those that could not be read first."""
    if not result.skipped:
        return []
    ordered = result.unreadable + [s for s in result.skipped if not s.unreadable]
    lines = [_NARROW, f"SKIPPED FILES ({len(ordered)}):"]
    lines += [f"  - {s.path}: {s.describe()}" for s in ordered[:SKIPPED_SHOWN]]
    if len(ordered) > SKIPPED_SHOWN:
        lines.append(f"  ... and {len(ordered) - SKIPPED_SHOWN} more (--json lists them all)")
    return [*lines, ""]


def plural(count: int, noun: str) -> str:
    """``1 issue``, ``2 issues``."""
    return f"{count} {noun}{'' if count == 1 else 's'}"


def _type(vuln: Mapping[str, Any]) -> str:
    cwe = vuln.get("cwe")
    return f"{vuln['type']} (CWE-{cwe})" if cwe else str(vuln["type"])


def _clip(texts: list[str] | None) -> str:
    """The first non-empty text, cut at the chapter's 200 characters."""
    text = _one_line(next((t for t in texts or [] if t and t.strip()), None), empty="(none given)")
    return text if len(text) <= _CLIP else text[: _CLIP - 1] + "…"


def _one_line(text: str | None, *, empty: str = "(no message)") -> str:
    """Whitespace collapsed, so a multi-line error cannot break the layout."""
    return " ".join((text or "").split()) or empty
