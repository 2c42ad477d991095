"""What ``quorum eval review --journal`` keeps per function: its review as JSON, and back.

Scoring reads a review's finding groups (each finding's reviewer, CWE and lines) and
whether each reviewer's call succeeded; the journal keeps exactly that. A resumed review
has no chapter fields (votes, risk consensus), no usage and no source text: it made no
call in this run and cost nothing. Findings are stored field for field (``Finding`` is
plain data), units without their code (the data line holds it).

The fingerprint of a function covers its whole data line and the review's setup (model,
reviewers, confirmation threshold): resuming with other reviewers, or a changed line
under the same id, is an error naming the function, unless the job is restarted.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from quorum.apps.review.model import CodeReviewResult, Finding, FindingGroup, Skipped, Unit, UnitReview
from quorum.apps.review.taxonomy import Category
from quorum.engine.jobs import content_hash


def review_to_json(result: CodeReviewResult) -> dict[str, Any]:
    return {
        "model": result.model,
        "reviewers": list(result.reviewers),
        "confirmation_threshold": result.confirmation_threshold,
        "groups": [
            {"confirmed": g.confirmed, "findings": [asdict(f) for f in g.findings]} for g in result.groups
        ],
        "reviews": [_review(r) for r in result.reviews],
        "skipped": [asdict(s) for s in result.skipped],
    }


def review_from_json(data: dict[str, Any]) -> CodeReviewResult:
    groups = [
        FindingGroup([_finding(f) for f in g["findings"]], confirmed=g["confirmed"]) for g in data["groups"]
    ]
    return CodeReviewResult(
        votes=[],
        confirmed_vulnerabilities=[g.as_chapter_dict() for g in groups],
        risk_consensus="unknown",
        confidence=0.0,
        execution_time=0.0,
        groups=groups,
        reviews=[_unit_review(r) for r in data["reviews"]],
        skipped=[Skipped(**s) for s in data["skipped"]],
        reviewers=list(data["reviewers"]),
        confirmation_threshold=data["confirmation_threshold"],
        model=data["model"],
    )


def case_fingerprint(line: object, setup: object) -> str:
    """A function's data line (as read) and the review setup it is judged by."""
    return content_hash([line, setup])


def _review(review: UnitReview) -> dict[str, Any]:
    unit = {k: v for k, v in asdict(review.unit).items() if k != "code"}
    return {"reviewer": review.reviewer, "status": review.status, "error": review.error, "unit": unit}


def _unit_review(data: dict[str, Any]) -> UnitReview:
    unit = Unit(**data["unit"], code="")
    return UnitReview(data["reviewer"], unit, status=data["status"], error=data["error"])


def _finding(data: dict[str, Any]) -> Finding:
    return Finding(**{**data, "category": Category(data["category"])})
