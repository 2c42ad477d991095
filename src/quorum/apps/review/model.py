"""The review's data: what was read, what each reviewer found, what the vote concluded.

``Vulnerability``, ``ReviewerVote`` and ``CodeReviewResult`` are the chapter's names and
fields; ``CodeReviewResult`` also carries everything the reports need (groups, units,
per-call reviews, skipped files, the run summary and the call timeline).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Literal

from quorum.apps.review.taxonomy import Category, family_of, severity_rank
from quorum.engine.outcome import Summary
from quorum.llm.types import Usage

Source = Literal["llm", "static"]


@dataclass(frozen=True)
class Unit:
    """A piece of code reviewed on its own: a function, a class, a window of lines, a
    hunk of a diff. ``start_line`` is where ``code`` begins in the file (1-based)."""

    path: str
    name: str
    kind: str  # "function", "class", "module", "window", "hunk"
    start_line: int
    end_line: int
    code: str
    language: str = "python"

    @property
    def key(self) -> str:
        return f"{self.path}:{self.start_line}-{self.end_line}"


@dataclass(frozen=True)
class Finding:
    """One reviewer's report of one weakness, with lines in file coordinates."""

    reviewer: str
    category: Category
    cwe: int | None
    severity: str  # info, low, medium, high, critical
    confidence: str  # high, medium, low
    path: str
    start_line: int
    end_line: int
    description: str
    recommendation: str = ""
    source: Source = "llm"
    unit: str = ""

    @property
    def family(self) -> str:
        return family_of(self.cwe, self.category)


@dataclass
class FindingGroup:
    """Findings of one weakness from one or more reviewers: same CWE family, same file,
    line ranges within a few lines of each other."""

    findings: list[Finding]
    confirmed: bool = False
    confirmed_by_rule: str = ""  # why it is confirmed with fewer votes than the threshold

    @property
    def reporters(self) -> list[str]:
        return sorted({f.reviewer for f in self.findings})

    @property
    def vote_count(self) -> int:
        return len(self.reporters)

    @property
    def family(self) -> str:
        return self.findings[0].family

    @property
    def category(self) -> Category:
        return Counter(f.category for f in self.findings).most_common(1)[0][0]

    @property
    def cwe(self) -> int | None:
        stated = [f.cwe for f in self.findings if f.cwe is not None]
        return Counter(stated).most_common(1)[0][0] if stated else None

    @property
    def severity(self) -> str:
        return max((f.severity for f in self.findings), key=severity_rank)

    @property
    def path(self) -> str:
        return self.findings[0].path

    @property
    def start_line(self) -> int:
        return min(f.start_line for f in self.findings)

    @property
    def end_line(self) -> int:
        return max(f.end_line for f in self.findings)

    @property
    def location(self) -> str:
        lines = (
            f"{self.start_line}" if self.start_line == self.end_line else f"{self.start_line}-{self.end_line}"
        )
        return f"{self.path}:{lines}"

    def as_chapter_dict(self) -> dict[str, Any]:
        """The chapter's ``confirmed_vulnerabilities`` entry, plus CWE and line fields."""
        return {
            "type": self.category.value,
            "severity": self.severity,
            "location": self.location,
            "descriptions": [f.description for f in self.findings],
            "recommendations": [f.recommendation for f in self.findings],
            "reporters": [f.reviewer for f in self.findings],
            "vote_count": self.vote_count,
            "confirmed": self.confirmed,
            "confirmed_by_rule": self.confirmed_by_rule or None,
            "cwe": self.cwe,
            "family": self.family,
            "file": self.path,
            "start_line": self.start_line,
            "end_line": self.end_line,
        }


# Reasons for which a file meant for review could not be read: a review that skipped one
# did not do all its work. The other reasons ("ignored", "vendored", "generated", "not
# source", "empty", "unchanged") are choices, not failures.
UNREADABLE_REASONS = frozenset({"too large", "binary", "not UTF-8", "unreadable"})


@dataclass(frozen=True)
class Skipped:
    """A file left out of the review: why (``reason``, a short word that reports count)
    and, where there is more to say, how to review it after all (``detail``)."""

    path: str
    reason: str  # "binary", "vendored", "generated", "ignored", "too large", "empty", ...
    detail: str = ""

    @property
    def unreadable(self) -> bool:
        """A file that should have been reviewed and could not be (see ``UNREADABLE_REASONS``)."""
        return self.reason in UNREADABLE_REASONS

    def describe(self) -> str:
        """``too large (10,485,760 bytes; ...)``: the reason, then the detail if any."""
        return f"{self.reason} ({self.detail})" if self.detail else self.reason


@dataclass
class UnitReview:
    """One reviewer's verdict on one unit: one call (or one static scan)."""

    reviewer: str
    unit: Unit
    findings: list[Finding] = field(default_factory=list)
    overall_risk: str = "unknown"
    status: str = "ok"  # an engine status: ok, error, cancelled, timeout, skipped
    error: str | None = None
    usage: Usage = field(default_factory=Usage)
    cost: float | None = None
    started_s: float | None = None  # seconds from the start of the review
    finished_s: float | None = None


@dataclass
class Vulnerability:
    """The chapter's vulnerability record (``location`` is ``path:line`` here)."""

    type: str
    severity: str
    location: str
    description: str
    recommendation: str


@dataclass
class ReviewerVote:
    """The chapter's per-reviewer assessment, over every unit that reviewer saw."""

    reviewer_name: str
    found_vulnerabilities: list[Vulnerability]
    overall_risk: str
    success: bool = True
    error: str | None = None


@dataclass
class CodeReviewResult:
    """The chapter's fields, then the rest of the review."""

    votes: list[ReviewerVote]
    confirmed_vulnerabilities: list[dict[str, Any]]
    risk_consensus: str
    confidence: float
    execution_time: float
    groups: list[FindingGroup] = field(default_factory=list)
    units: list[Unit] = field(default_factory=list)
    reviews: list[UnitReview] = field(default_factory=list)
    files: list[str] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)
    reviewers: list[str] = field(default_factory=list)
    confirmation_threshold: int = 2
    model: str = ""
    summary: Summary = field(default_factory=Summary)
    sources: dict[str, str] = field(default_factory=dict, repr=False)  # path -> text, for excerpts
    warnings: list[str] = field(default_factory=list)
    # The model's prose is not shown (its provider says it cannot write it): its findings
    # carry the category's reference text, and every report labels them advisory.
    advisory: bool = False
    # The reviewers' own consensus, when ``risk_consensus`` was raised to the most severe
    # confirmed finding (the headline never reads lower than a confirmed finding); "" when
    # it was not raised, or when no reviewer gave a risk (static voters only, failed calls).
    risk_from_reviewers: str = ""

    @property
    def confirmed(self) -> list[FindingGroup]:
        return [g for g in self.groups if g.confirmed]

    @property
    def potential(self) -> list[FindingGroup]:
        return [g for g in self.groups if not g.confirmed]

    def skipped_counts(self) -> dict[str, int]:
        return dict(Counter(s.reason for s in self.skipped))

    @property
    def unreadable(self) -> list[Skipped]:
        """Files meant for review that could not be read (too large, binary, not UTF-8)."""
        return [s for s in self.skipped if s.unreadable]

    @property
    def failed_reviews(self) -> list[UnitReview]:
        """Calls and scans that did not succeed."""
        return [r for r in self.reviews if r.status != "ok"]

    @property
    def nothing_reviewed(self) -> bool:
        """Not one file was read: such a review is never a pass."""
        return not self.files
