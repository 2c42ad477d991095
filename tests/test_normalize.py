"""Matching a voter's answer to the options: exact after folding, a unique prefix, or nothing.

The chapter matched by substring in both directions, so "unacceptable" counted as
"acceptable". These cases pin the rule that replaced it.
"""

from __future__ import annotations

import pytest

from quorum.patterns.normalize import MIN_PREFIX, fold, normalize_decision

OPTIONS = ["acceptable", "needs_review", "rejected"]


@pytest.mark.parametrize(
    "answer",
    ["unacceptable", "not acceptable", "Not Acceptable.", "acceptable-ish", "un-acceptable"],
)
def test_negated_or_extended_answers_match_nothing(answer: str) -> None:
    assert normalize_decision(answer, OPTIONS) is None


@pytest.mark.parametrize(
    ("answer", "option"),
    [
        ("Needs Review", "needs_review"),
        ("needs-review", "needs_review"),
        ("NEEDS_REVIEW", "needs_review"),
        ("needs   review", "needs_review"),
        ("**rejected**", "rejected"),
        ("Rejected.", "rejected"),
        ("`acceptable`", "acceptable"),
        ('"acceptable"!', "acceptable"),
        ("[needs_review]", "needs_review"),
        ("  rejected\n", "rejected"),
    ],
)
def test_case_separators_punctuation_and_markdown_are_folded(answer: str, option: str) -> None:
    assert normalize_decision(answer, OPTIONS) == option


@pytest.mark.parametrize(
    ("answer", "option"),
    [("reject", "rejected"), ("rej", "rejected"), ("needs", "needs_review"), ("accept", "acceptable")],
)
def test_a_unique_prefix_names_its_option(answer: str, option: str) -> None:
    assert normalize_decision(answer, OPTIONS) == option


def test_an_ambiguous_prefix_names_nothing() -> None:
    options = ["approve", "approve_with_changes", "reject"]
    assert normalize_decision("appr", options) is None
    # ...while the exact option wins over the longer one it begins.
    assert normalize_decision("Approve", options) == "approve"
    assert normalize_decision("approve with", options) == "approve_with_changes"


def test_a_prefix_shorter_than_the_minimum_names_nothing() -> None:
    assert MIN_PREFIX == 3
    assert normalize_decision("re", OPTIONS) is None
    assert normalize_decision("a", OPTIONS) is None
    assert normalize_decision("rej", OPTIONS) == "rejected"


def test_short_options_still_match_exactly() -> None:
    assert normalize_decision("No.", ["yes", "no"]) == "no"
    assert normalize_decision("n", ["yes", "no"]) is None


@pytest.mark.parametrize("answer", [None, "", "   ", "**", "..."])
def test_empty_answers_name_nothing(answer: str | None) -> None:
    assert normalize_decision(answer, OPTIONS) is None


@pytest.mark.parametrize(
    "answer",
    ["DECISION: rejected", "rejected because it is spam", "I think acceptable", "reviewed", "needs_reviews"],
)
def test_sentences_and_near_misses_are_not_guessed(answer: str) -> None:
    assert normalize_decision(answer, OPTIONS) is None


def test_the_original_option_spelling_is_returned() -> None:
    options = ["Needs Review", "OK"]
    assert normalize_decision("needs_review", options) == "Needs Review"
    assert normalize_decision("ok", options) == "OK"


def test_fold() -> None:
    assert fold("  **Needs__Review**. ") == "needs review"
    assert fold("needs - review") == "needs review"
