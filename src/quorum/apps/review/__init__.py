"""Security code review by voting: the chapter's ``CodeReviewSystem``, over units of code.

``inputs`` finds the files, ``units`` cuts them into functions, classes and windows,
``reviewers`` asks each LLM reviewer about each unit, ``static`` adds deterministic
voters, ``grouping`` counts the votes, ``system`` runs it all as one engine run and fills
in the ``CodeReviewResult`` (``model``) that the reports render.
"""

from quorum.apps.review.grouping import group_findings, risk_consensus
from quorum.apps.review.inputs import Collected, SourceFile, changed_lines, collect
from quorum.apps.review.model import (
    CodeReviewResult,
    Finding,
    FindingGroup,
    ReviewerVote,
    Skipped,
    Unit,
    UnitReview,
    Vulnerability,
)
from quorum.apps.review.report_text import format_review_report
from quorum.apps.review.reviewers import CHAPTER_REVIEWERS, Reviewer, load_reviewers
from quorum.apps.review.system import CodeReviewSystem
from quorum.apps.review.taxonomy import Category

__all__ = [
    "CHAPTER_REVIEWERS",
    "Category",
    "CodeReviewResult",
    "CodeReviewSystem",
    "Collected",
    "Finding",
    "FindingGroup",
    "Reviewer",
    "ReviewerVote",
    "Skipped",
    "SourceFile",
    "Unit",
    "UnitReview",
    "Vulnerability",
    "changed_lines",
    "collect",
    "format_review_report",
    "group_findings",
    "load_reviewers",
    "risk_consensus",
]
