"""What the eval journal keeps of a review survives the JSON round trip, and scores the same."""

from __future__ import annotations

import json

from quorum.apps.review.eval_journal import review_from_json, review_to_json
from quorum.apps.review.evaluate import Case, Families, score
from quorum.apps.review.model import CodeReviewResult, Finding, FindingGroup, Skipped, Unit, UnitReview
from quorum.apps.review.taxonomy import Category

UNIT = Unit("code.py", "f", "function", 1, 3, "def f(x):\n    q = 'S' + x\n    return q\n")


def finding(reviewer: str, cwe: int | None, line: int) -> Finding:
    return Finding(reviewer, Category.SQL_INJECTION, cwe, "high", "medium", "code.py", line, line + 1, "why")


def review() -> CodeReviewResult:
    groups = [
        FindingGroup([finding("a", 89, 2), finding("b", None, 3)], confirmed=True),
        FindingGroup([finding("a", 79, 1)]),
    ]
    reviews = [UnitReview("a", UNIT), UnitReview("b", UNIT, status="error", error="ServerError: 500")]
    return CodeReviewResult(
        [], [], "high", 1.0, 0.5, groups=groups, reviews=reviews, skipped=[Skipped("x.bin", "binary")]
    )


def test_groups_and_call_statuses_round_trip_through_json() -> None:
    original = review()
    back = review_from_json(json.loads(json.dumps(review_to_json(original))))
    assert [g.findings for g in back.groups] == [g.findings for g in original.groups]
    assert [(g.vote_count, g.cwe, g.start_line, g.end_line, g.confirmed) for g in back.groups] == [
        (2, 89, 2, 4, True),
        (1, 79, 1, 2, False),
    ]
    assert [(r.reviewer, r.status, r.error, r.unit.key) for r in back.reviews] == [
        ("a", "ok", None, UNIT.key),
        ("b", "error", "ServerError: 500", UNIT.key),
    ]
    assert back.skipped == original.skipped


def test_a_resumed_review_scores_as_the_live_one() -> None:
    cases = [Case("p1a", "p1", "before", UNIT.code, ((89, 2),)), Case("p1b", "p1", "after", UNIT.code, ())]
    live = review()
    resumed = review_from_json(json.loads(json.dumps(review_to_json(live))))
    families = Families({89: "injection", 79: "xss"})
    for threshold in (1, 2):
        assert score(cases, {"p1a": resumed, "p1b": resumed}, families, threshold) == score(
            cases, {"p1a": live, "p1b": live}, families, threshold
        )
