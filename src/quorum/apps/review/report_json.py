"""The review as JSON: a stable, documented shape for tools, and the identities every
report shares (group ids, rule ids, titles, code excerpts).

``to_json(result)`` returns plain data (dicts, lists, str, int, float, bool, None; never
a Python repr, never NaN or infinity) and ``dumps(result)`` its text. The shape, version
``SCHEMA_VERSION``::

    {
      "schema": "quorum.review", "schema_version": 2,
      "model": str, "advisory": bool,
      "risk": {"consensus": str, "confidence": float 0..1, "from_reviewers": str},
      "execution_time_s": float, "confirmation_threshold": int,
      "reviewers": [str], "files": [str],
      "summary": {"tasks", "counts": {status: int}, "retries", "stopped",
                  "usage": {"input_tokens", "output_tokens", "cache_read_tokens",
                            "cache_write_tokens"},
                  "cost_usd": float | null, "unpriced", "wall_s", "busy_s", "time_saved_s"},
      "groups": [{"id", "rule_id", "title", "category", "cwe": int | null, "family",
                  "severity", "confirmed", "file", "start_line", "end_line", "location",
                  "reporters": [str], "vote_count", "confirmed_by_rule": str | null,
                  "descriptions": [str], "recommendations": [str],
                  "reference": {"what", "why", "fix", "cwe_uri"} | null,
                  "findings": [{"reviewer", "severity", "confidence", "start_line",
                                "end_line", "description", "recommendation", "source", "unit"}],
                  "excerpt": {"start_line", "end_line", "text"} | null}],
      "votes": [{"reviewer", "overall_risk", "success", "error",
                 "vulnerabilities": [{"type", "severity", "location", "description",
                                      "recommendation"}]}],
      "units": [{"key", "path", "name", "kind", "language", "start_line", "end_line"}],
      "reviews": [{"reviewer", "unit", "status", "error", "overall_risk", "findings",
                   "usage": {...}, "cost_usd", "started_s", "finished_s", "duration_s"}],
      "skipped": [{"path", "reason", "detail", "unreadable"}], "skipped_counts": {reason: int},
      "failed_calls": int, "nothing_reviewed": bool
    }

Groups keep the order of ``result.groups``; ``id`` is stable across runs while the
flagged code does not change (see ``group_ids``); ``rule_id`` is the SARIF rule of a
confirmed group. ``recommendations`` lists the non-empty ones; ``excerpt`` is the flagged
lines (``start_line``..``end_line`` of the group) with two lines of context, null when
the source is unknown. A review's ``unit`` is a ``units[].key`` and its ``findings`` a
count. Times are seconds from the start of the review, rounded to the millisecond;
money is US dollars; an unknown number is null. Input tokens count cached ones too.
``advisory`` is true when the model's own prose is not shown (``Capabilities.writes_prose``):
``descriptions`` and ``recommendations`` of its findings are then the category's reference
text, also given as ``reference``. A change that removes or renames a field raises
``schema_version`` (2: ``tokens`` became ``usage`` with ``input_tokens``/``output_tokens``).
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections import Counter
from dataclasses import dataclass
from typing import Any

from quorum.apps.review.model import (
    CodeReviewResult,
    Finding,
    FindingGroup,
    ReviewerVote,
    Unit,
    UnitReview,
)
from quorum.apps.review.reference import cwe_uri, reference
from quorum.apps.review.taxonomy import CWE_OF, Category
from quorum.engine.outcome import Summary
from quorum.llm.types import Usage

SCHEMA = "quorum.review"
SCHEMA_VERSION = 2

# Lines of context shown around the flagged lines, and the most lines an excerpt shows.
EXCERPT_CONTEXT = 2
EXCERPT_MAX_LINES = 40

_TITLES: dict[Category, str] = {
    Category.SQL_INJECTION: "SQL injection",
    Category.COMMAND_INJECTION: "OS command injection",
    Category.CODE_INJECTION: "Code injection",
    Category.TEMPLATE_INJECTION: "Template injection",
    Category.XSS: "Cross-site scripting",
    Category.PATH_TRAVERSAL: "Path traversal",
    Category.SSRF: "Server-side request forgery",
    Category.XXE: "XML external entity reference",
    Category.OPEN_REDIRECT: "Open redirect",
    Category.DESERIALIZATION: "Insecure deserialization",
    Category.HARDCODED_SECRET: "Hard-coded secret",
    Category.WEAK_CRYPTO: "Weak cryptography",
    Category.INSECURE_RANDOM: "Insecure randomness",
    Category.BROKEN_AUTH: "Broken authentication",
    Category.SESSION: "Session management weakness",
    Category.ACCESS_CONTROL: "Broken access control",
    Category.CSRF: "Cross-site request forgery",
    Category.DATA_EXPOSURE: "Sensitive data exposure",
    Category.SENSITIVE_LOGGING: "Sensitive data in logs",
    Category.DEBUG_BACKDOOR: "Debug code or backdoor",
    Category.INPUT_VALIDATION: "Missing input validation",
    Category.DOS: "Uncontrolled resource consumption",
    Category.PROMPT_INJECTION: "Prompt injection",
    Category.OTHER: "Other weakness",
}


# -- identities shared by every report -------------------------------------------------


def category_title(category: Category) -> str:
    """A reader's name for a category ("SQL injection" for ``sql_injection``)."""
    return _TITLES.get(category) or category.value.replace("_", " ").capitalize()


def group_cwe(group: FindingGroup) -> int | None:
    """The CWE a group is filed under: the one reviewers stated, else the category's."""
    return group.cwe if group.cwe is not None else CWE_OF.get(group.category)


def rule_id(group: FindingGroup) -> str:
    """The rule a group belongs to: its category, plus the CWE when reviewers named one
    other than the category's own (``sql_injection``, ``sql_injection/cwe-564``,
    ``other/cwe-1321``). The SARIF report uses these ids for its rules."""
    cwe = group_cwe(group)
    if cwe is None or cwe == CWE_OF.get(group.category):
        return group.category.value
    return f"{group.category.value}/cwe-{cwe}"


def group_ids(result: CodeReviewResult) -> list[str]:
    """One id per group of ``result.groups``, in order: a hash of the rule, the file and
    the flagged code with whitespace normalised, so an id survives reformatting and the
    code moving to other lines. Groups that would share a hash get ``:2``, ``:3``, ... in
    order. Without the source text the line numbers stand in for the code."""
    seen: Counter[str] = Counter()
    ids = []
    for group in result.groups:
        digest = _fingerprint(group, result)
        seen[digest] += 1
        ids.append(f"{digest}:{seen[digest]}")
    return ids


def _fingerprint(group: FindingGroup, result: CodeReviewResult) -> str:
    lines = source_lines(result, group.path)
    if lines:
        flagged = lines[max(0, group.start_line - 1) : max(group.start_line, group.end_line)]
        code = "\n".join(" ".join(line.split()) for line in flagged if line.strip())
    else:
        code = f"lines {group.start_line}-{group.end_line}"
    text = "\0".join((rule_id(group), normalise_path(group.path), code))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:32]


def normalise_path(path: str) -> str:
    """Forward slashes, no leading ``./``: the same file always spells the same way."""
    path = path.replace("\\", "/")
    while path.startswith("./"):
        path = path[2:]
    return re.sub(r"/{2,}", "/", path)


def reviewer_names(result: CodeReviewResult) -> list[str]:
    """Every reviewer, in the configured order, then any others seen in votes, calls or
    findings (a result built by hand may not list them)."""
    names = list(result.reviewers)
    names += [v.reviewer_name for v in result.votes]
    names += [r.reviewer for r in result.reviews]
    names += [f.reviewer for g in result.groups for f in g.findings]
    return list(dict.fromkeys(names))


# -- code excerpts ---------------------------------------------------------------------


@dataclass(frozen=True)
class Excerpt:
    """Lines of a file around a finding; ``flagged`` are the finding's own lines."""

    path: str
    start_line: int
    lines: list[str]
    flagged: range

    @property
    def end_line(self) -> int:
        return self.start_line + len(self.lines) - 1

    def numbered(self) -> list[tuple[int, str, bool]]:
        """``(line number, text, flagged)`` for every line."""
        return [(n, text, n in self.flagged) for n, text in enumerate(self.lines, self.start_line)]


def source_lines(result: CodeReviewResult, path: str) -> list[str]:
    """A file's lines from ``result.sources``, else pieced together from its units
    (empty strings where no unit covers a line); empty if neither knows the file."""
    text = result.sources.get(path)
    if text is not None:
        return text.splitlines()
    units = [u for u in result.units if u.path == path]
    return _lines_from_units(units)


def _lines_from_units(units: list[Unit]) -> list[str]:
    lines: list[str] = []
    for unit in units:
        first = max(1, unit.start_line) - 1
        code = unit.code.splitlines()
        lines.extend([""] * (first + len(code) - len(lines)))
        lines[first : first + len(code)] = code
    return lines


def excerpt(
    result: CodeReviewResult,
    group: FindingGroup,
    *,
    context: int = EXCERPT_CONTEXT,
    max_lines: int = EXCERPT_MAX_LINES,
) -> Excerpt | None:
    """The flagged lines with ``context`` lines either side, at most ``max_lines`` long;
    ``None`` when the source is unknown or the lines lie outside it."""
    lines = source_lines(result, group.path)
    start, end = max(1, group.start_line), min(len(lines), max(group.start_line, group.end_line))
    if start > len(lines):
        return None
    first = max(1, start - context)
    last = min(len(lines), end + context, first + max_lines - 1)
    return Excerpt(group.path, first, lines[first - 1 : last], range(start, end + 1))


# -- the JSON shape --------------------------------------------------------------------


def to_json(result: CodeReviewResult) -> dict[str, Any]:
    """The whole review as plain JSON data (the shape is in the module docstring)."""
    ids = group_ids(result)
    return {
        "schema": SCHEMA,
        "schema_version": SCHEMA_VERSION,
        "model": result.model,
        "advisory": result.advisory,
        "risk": {
            "consensus": result.risk_consensus,
            "confidence": _number(result.confidence, 4),
            "from_reviewers": result.risk_from_reviewers or result.risk_consensus,
        },
        "execution_time_s": _seconds(result.execution_time),
        "confirmation_threshold": result.confirmation_threshold,
        "reviewers": reviewer_names(result),
        "files": list(result.files),
        "summary": summary_json(result.summary),
        "groups": [_group(g, gid, result) for g, gid in zip(result.groups, ids, strict=True)],
        "votes": [_vote(v) for v in result.votes],
        "units": [_unit(u) for u in result.units],
        "reviews": [_review(r) for r in result.reviews],
        "skipped": [
            {"path": s.path, "reason": s.reason, "detail": s.detail, "unreadable": s.unreadable}
            for s in result.skipped
        ],
        "skipped_counts": result.skipped_counts(),
        "failed_calls": len(result.failed_reviews),
        "nothing_reviewed": result.nothing_reviewed,
    }


def dumps(result: CodeReviewResult, *, indent: int | None = 2) -> str:
    """``to_json`` as text. ``allow_nan=False`` makes a stray NaN an error here rather
    than invalid JSON in someone's pipeline."""
    return json.dumps(to_json(result), indent=indent, ensure_ascii=False, allow_nan=False)


def summary_json(summary: Summary) -> dict[str, Any]:
    """A run summary: counts by status, tokens, cost, and wall against busy time."""
    return {
        "tasks": summary.total,
        "counts": dict(sorted(summary.counts.items())),
        "retries": summary.retries,
        "stopped": summary.stopped,
        "usage": usage_json(summary.usage),
        "cost_usd": _number(summary.known_cost, 8),
        "unpriced": summary.unpriced,
        "wall_s": _seconds(summary.wall_s),
        "busy_s": _seconds(summary.busy_s),
        "time_saved_s": _seconds(summary.time_saved_s),
    }


def usage_json(usage: Usage) -> dict[str, int]:
    """The commands' token vocabulary (``Usage.as_json``), and the cache's share."""
    return {
        **usage.as_json(),
        "cache_read_tokens": usage.cache_read_tokens,
        "cache_write_tokens": usage.cache_write_tokens,
    }


def _group(group: FindingGroup, gid: str, result: CodeReviewResult) -> dict[str, Any]:
    found = excerpt(result, group)
    return {
        "id": gid,
        "rule_id": rule_id(group),
        "title": category_title(group.category),
        "category": group.category.value,
        "cwe": group_cwe(group),
        "family": group.family,
        "severity": group.severity,
        "confirmed": group.confirmed,
        "file": group.path,
        "start_line": group.start_line,
        "end_line": group.end_line,
        "location": group.location,
        "reporters": group.reporters,
        "vote_count": group.vote_count,
        "confirmed_by_rule": group.confirmed_by_rule or None,
        "descriptions": [f.description for f in group.findings],
        "recommendations": [f.recommendation for f in group.findings if f.recommendation],
        "findings": [_finding(f) for f in group.findings],
        "excerpt": None if found is None else _excerpt(found),
        "reference": _reference(group) if result.advisory else None,
    }


def _reference(group: FindingGroup) -> dict[str, Any] | None:
    """The category's reference text, for a group only the model reported."""
    if any(f.source != "llm" for f in group.findings):
        return None
    text = reference(group.category)
    cwe = group_cwe(group)
    return {"what": text.what, "why": text.why, "fix": text.fix, "cwe_uri": cwe_uri(cwe) if cwe else None}


def _finding(finding: Finding) -> dict[str, Any]:
    return {
        "reviewer": finding.reviewer,
        "severity": finding.severity,
        "confidence": finding.confidence,
        "start_line": finding.start_line,
        "end_line": finding.end_line,
        "description": finding.description,
        "recommendation": finding.recommendation,
        "source": finding.source,
        "unit": finding.unit,
    }


def _excerpt(found: Excerpt) -> dict[str, Any]:
    return {"start_line": found.start_line, "end_line": found.end_line, "text": "\n".join(found.lines)}


def _vote(vote: ReviewerVote) -> dict[str, Any]:
    return {
        "reviewer": vote.reviewer_name,
        "overall_risk": vote.overall_risk,
        "success": vote.success,
        "error": vote.error,
        "vulnerabilities": [
            {
                "type": v.type,
                "severity": v.severity,
                "location": v.location,
                "description": v.description,
                "recommendation": v.recommendation,
            }
            for v in vote.found_vulnerabilities
        ],
    }


def _unit(unit: Unit) -> dict[str, Any]:
    return {
        "key": unit.key,
        "path": unit.path,
        "name": unit.name,
        "kind": unit.kind,
        "language": unit.language,
        "start_line": unit.start_line,
        "end_line": unit.end_line,
    }


def _review(review: UnitReview) -> dict[str, Any]:
    started, finished = _seconds(review.started_s), _seconds(review.finished_s)
    duration = None if started is None or finished is None else _seconds(finished - started)
    return {
        "reviewer": review.reviewer,
        "unit": review.unit.key,
        "status": review.status,
        "error": review.error,
        "overall_risk": review.overall_risk,
        "findings": len(review.findings),
        "usage": usage_json(review.usage),
        "cost_usd": _number(review.cost, 8),
        "started_s": started,
        "finished_s": finished,
        "duration_s": duration,
    }


def _seconds(value: float | None) -> float | None:
    return _number(value, 3)


def _number(value: float | None, digits: int) -> float | None:
    """A finite float rounded to ``digits``; NaN and infinities become ``None``."""
    if value is None or not math.isfinite(value):
        return None
    return round(float(value), digits)
