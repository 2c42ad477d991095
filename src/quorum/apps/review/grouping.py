"""The vote: findings from different reviewers that describe one weakness, counted.

The chapter groups findings by the exact text ``type:location``, so "SQL Injection" at
"line 5" and "SQLi" at "login()" never confirm each other. Here two findings are the same
weakness when they name the same CWE family (``taxonomy.family_of``: CWE-89 and CWE-564
are both SQL injection) in the same file on lines at most ``SLACK`` apart. A sorted sweep
over each (file, family) opens a group at its earliest finding and adds the findings that
come within ``SLACK`` lines of that first one. It is deliberately not a chain: reviewers
who report a bug at lines 22, 23 and 21-24 agree, but a chain through a finding that
spans a whole function would join the bugs of two neighbouring functions into one vote.
Different families on one line stay apart: an SQL injection and a hard-coded password on
line 5 are two problems.

A group is confirmed when at least ``confirm`` distinct reviewers report it (one reviewer
reporting a weakness twice, from overlapping windows, is still one vote), or when it
holds a finding of a self-confirming static voter (``injection_guard``: a pattern match is
not an opinion that needs a second vote; the group then says so in ``confirmed_by_rule``,
and every report shows it). A ``prompt_injection`` finding of an LLM reviewer follows the
threshold like any other. Findings of
category ``other`` without a CWE still group, but votes cannot confirm them (see
``_confirmed``).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection, Iterable, Sequence
from itertools import groupby

from quorum.apps.review.model import Finding, FindingGroup
from quorum.apps.review.static import INJECTION_GUARD
from quorum.apps.review.taxonomy import Category, family_of, risk_rank, severity_rank

SLACK = 3
SELF_CONFIRMING = frozenset({INJECTION_GUARD})
UNNAMED = family_of(None, Category.OTHER)
SELF_CONFIRMING_RULE = "{} matched a known pattern, which needs no second vote"


def group_findings(
    findings: Iterable[Finding],
    *,
    confirm: int = 2,
    slack: int = SLACK,
    self_confirming: Collection[str] = SELF_CONFIRMING,
) -> list[FindingGroup]:
    """Findings grouped and voted on, confirmed first, then by severity and position."""
    groups: list[FindingGroup] = []
    by_place = sorted(findings, key=lambda f: (f.path, f.family, f.start_line, f.end_line))
    for _, same in groupby(by_place, key=lambda f: (f.path, f.family)):
        groups.extend(_sweep(list(same), slack))
    for group in groups:
        group.confirmed = _confirmed(group, confirm, self_confirming)
        by_rule = sorted({f.reviewer for f in group.findings} & set(self_confirming))
        if group.confirmed and group.vote_count < confirm and by_rule:
            group.confirmed_by_rule = SELF_CONFIRMING_RULE.format(", ".join(by_rule))
    return sorted(groups, key=_rank)


def _confirmed(group: FindingGroup, confirm: int, self_confirming: Collection[str]) -> bool:
    if any(f.reviewer in self_confirming for f in group.findings):
        return True
    if group.family == UNNAMED and confirm > 1:
        # "other" without a CWE: nobody named the weakness, and reviewers agreeing that
        # there is something near line 12 have not agreed on what it is.
        return False
    return group.vote_count >= confirm


def _sweep(findings: Sequence[Finding], slack: int) -> list[FindingGroup]:
    """Groups of findings (sorted by start line) that come within ``slack`` lines of the
    group's first finding."""
    groups: list[FindingGroup] = []
    reach = 0
    for finding in findings:
        if groups and finding.start_line <= reach + slack:
            groups[-1].findings.append(finding)
        else:
            groups.append(FindingGroup([finding]))
            reach = finding.end_line
    return groups


def _rank(group: FindingGroup) -> tuple[bool, int, str, int]:
    return (not group.confirmed, -severity_rank(group.severity), group.path, group.start_line)


def highest_risk(risks: Iterable[str]) -> str:
    """A reviewer's overall risk across its units: the highest it gave (a file with one
    critical function is critical), or "unknown" when it gave none."""
    known = [r for r in risks if risk_rank(r) >= 0]
    return max(known, key=risk_rank) if known else "unknown"


def risk_consensus(risks: Sequence[str]) -> tuple[str, float]:
    """The chapter's consensus: the overall risk most reviewers gave, and its share of
    the reviewers that gave one ("unknown" ones do not count) as the confidence.

    Unlike ``Counter.most_common``, whose ties fall to whichever risk came first, a tie
    goes to the higher risk: two reviewers saying "high" and two saying "low" is reported
    as "high" at 50% confidence, since under-stating a risk costs more than over-stating
    it. No known risk at all gives ("unknown", 0.0)."""
    known = [r.strip().lower() for r in risks if risk_rank(r) >= 0]
    if not known:
        return "unknown", 0.0
    counts = Counter(known)
    winner = max(counts, key=lambda r: (counts[r], risk_rank(r)))
    return winner, counts[winner] / len(known)
