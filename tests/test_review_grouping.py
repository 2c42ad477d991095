"""The vote: grouping findings by weakness and place, confirming, and the risk consensus."""

from __future__ import annotations

from quorum.apps.review.grouping import group_findings, highest_risk, risk_consensus
from quorum.apps.review.model import Finding
from quorum.apps.review.taxonomy import Category, cwe_for


def finding(
    reviewer: str,
    category: Category,
    start: int,
    end: int | None = None,
    *,
    cwe: int | None = None,
    severity: str = "medium",
    path: str = "app.py",
    description: str = "",
) -> Finding:
    return Finding(
        reviewer, category, cwe_for(category, cwe), severity, "high", path, start, end or start, description
    )


def test_the_same_bug_in_other_words_and_nearby_lines_is_one_group() -> None:
    found = [
        # CWE-89 and CWE-564 are both SQL injection; lines 5, 7 and 8-9 are within 3.
        finding("injection", Category.SQL_INJECTION, 5, description="SQL built with an f-string"),
        finding("general", Category.OTHER, 7, cwe=564, description="Hibernate-style SQLi"),
        finding("data", Category.SQL_INJECTION, 8, 9, description="unsanitised query"),
    ]
    [group] = group_findings(found)
    assert group.vote_count == 3
    assert group.confirmed
    assert group.family == "sqli"
    assert (group.start_line, group.end_line) == (5, 9)
    assert group.as_chapter_dict()["location"] == "app.py:5-9"


def test_a_group_holds_what_comes_within_three_lines_of_its_first_finding_not_a_chain() -> None:
    found = [finding(r, Category.XSS, line) for r, line in (("a", 10), ("b", 13), ("c", 16), ("d", 20))]
    groups = group_findings(found)
    assert sorted((g.start_line, g.end_line, g.vote_count) for g in groups) == [
        (10, 13, 2),
        (16, 16, 1),
        (20, 20, 1),
    ]


def test_a_wide_finding_does_not_carry_its_group_into_the_next_bug() -> None:
    found = [
        finding("a", Category.SQL_INJECTION, 10, 12),
        finding("b", Category.SQL_INJECTION, 14, 24),  # within 3 lines of a: a vote for a's bug
        finding("c", Category.SQL_INJECTION, 22),  # within b's range, 10 lines past a's
        finding("d", Category.SQL_INJECTION, 23),
    ]
    groups = group_findings(found)
    # A chain through b's wide range would have made one group of all four.
    assert sorted((g.start_line, g.end_line, g.reporters) for g in groups) == [
        (10, 24, ["a", "b"]),
        (22, 23, ["c", "d"]),
    ]


def test_two_weaknesses_on_one_line_stay_apart() -> None:
    found = [
        finding("a", Category.SQL_INJECTION, 5),
        finding("b", Category.HARDCODED_SECRET, 5),
        finding("c", Category.SQL_INJECTION, 5),
    ]
    groups = group_findings(found)
    assert {(g.family, g.vote_count) for g in groups} == {("sqli", 2), ("secrets", 1)}


def test_different_files_stay_apart() -> None:
    found = [finding("a", Category.XSS, 5, path="a.py"), finding("b", Category.XSS, 5, path="b.py")]
    assert [g.vote_count for g in group_findings(found)] == [1, 1]


def test_the_confirmation_threshold_counts_distinct_reviewers() -> None:
    found = [
        finding("a", Category.XSS, 5),
        finding("a", Category.XSS, 6),  # the same reviewer again (overlapping windows)
        finding("b", Category.XSS, 6),
    ]
    assert group_findings(found, confirm=2)[0].confirmed
    assert not group_findings(found, confirm=3)[0].confirmed
    alone = [finding("a", Category.XSS, 5), finding("a", Category.XSS, 6)]
    assert not group_findings(alone, confirm=2)[0].confirmed
    assert group_findings(alone, confirm=1)[0].confirmed


def test_unnamed_weaknesses_group_but_votes_do_not_confirm_them() -> None:
    found = [
        finding("a", Category.OTHER, 12),
        finding("b", Category.OTHER, 13),
        finding("c", Category.OTHER, 12),
    ]
    [group] = group_findings(found, confirm=2)
    assert (group.vote_count, group.confirmed) == (3, False)
    assert group_findings(found, confirm=1)[0].confirmed
    named = [finding("a", Category.OTHER, 12, cwe=1333), finding("b", Category.OTHER, 12, cwe=1333)]
    assert group_findings(named, confirm=2)[0].confirmed


def test_injection_guard_findings_confirm_themselves() -> None:
    [group] = group_findings([finding("injection_guard", Category.PROMPT_INJECTION, 3)], confirm=2)
    assert group.confirmed


def test_severity_is_the_highest_reported_and_orders_the_groups() -> None:
    found = [
        finding("a", Category.SQL_INJECTION, 5, severity="medium"),
        finding("b", Category.SQL_INJECTION, 5, severity="critical"),
        finding("a", Category.XSS, 40, severity="high"),
        finding("b", Category.XSS, 40, severity="low"),
        finding("a", Category.WEAK_CRYPTO, 60, severity="critical"),  # one vote: not confirmed
    ]
    groups = group_findings(found)
    assert [(g.family, g.severity, g.confirmed) for g in groups] == [
        ("sqli", "critical", True),
        ("xss", "high", True),
        ("crypto", "critical", False),
    ]


def test_risk_consensus_is_the_majority_and_its_share() -> None:
    assert risk_consensus(["high", "high", "low", "unknown"]) == ("high", 2 / 3)
    assert risk_consensus(["CRITICAL", "critical"]) == ("critical", 1.0)


def test_a_risk_tie_goes_to_the_higher_risk() -> None:
    assert risk_consensus(["low", "high", "high", "low"]) == ("high", 0.5)
    assert risk_consensus(["none", "medium"]) == ("medium", 0.5)


def test_no_known_risk_is_unknown() -> None:
    assert risk_consensus([]) == ("unknown", 0.0)
    assert risk_consensus(["unknown", "whatever"]) == ("unknown", 0.0)


def test_a_reviewers_risk_over_its_units_is_its_highest() -> None:
    assert highest_risk(["low", "none", "high", "medium"]) == "high"
    assert highest_risk(["none", "unknown"]) == "none"
    assert highest_risk(["unknown"]) == "unknown"
