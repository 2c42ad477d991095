"""Aggregation strategies as plain functions: counting, explicit ties, thresholds,
weights, free-text clusters and the synthesis call."""

from __future__ import annotations

import pytest

from quorum import FakeProvider
from quorum.engine import Budget, run
from quorum.errors import ConfigError
from quorum.llm import Price
from quorum.patterns import (
    Tally,
    cluster_vote,
    consensus_vote,
    majority_vote,
    merge_and_synthesize,
    normalize_text,
    tally,
    weighted_vote,
)
from quorum.patterns.aggregation import CONFIDENCE_WEIGHT


def test_tally_counts_and_names_the_winner() -> None:
    result = tally([("a", 1.0), ("b", 1.0), ("a", 1.0)])
    assert result.counts == {"a": 2.0, "b": 1.0}
    assert result.winner == "a"
    assert result.tied == ()
    assert result.total == 3.0
    assert result.share == pytest.approx(2 / 3)
    assert result.ranked() == [("a", 2.0), ("b", 1.0)]


def test_a_tie_has_no_winner_and_lists_the_tied_answers_whatever_the_order() -> None:
    for order in (["b", "a", "c"], ["a", "b", "c"], ["c", "a", "b"]):
        votes = [(v, 1.0) for v in order for _ in range(2 if v != "c" else 1)]
        result = tally(votes)
        assert result.winner is None
        assert result.tied == ("a", "b")


def test_no_votes_no_winner() -> None:
    assert tally([]) == Tally()
    assert Tally().share == 0.0
    assert majority_vote([]) is None


def test_majority_vote_never_breaks_a_tie_by_order() -> None:
    assert majority_vote(["x", "y", "x"]) == "x"
    assert majority_vote(["x", "y"]) is None
    assert majority_vote(["y", "x"]) is None


def test_consensus_vote_threshold_is_inclusive() -> None:
    votes = ["a", "a", "a", "b", "c"]  # share 0.6
    assert consensus_vote(votes, threshold=0.6) == ("a", True)
    assert consensus_vote(votes, threshold=0.61) == ("a", False)
    assert consensus_vote(["a"], threshold=1.0) == ("a", True)


def test_consensus_vote_on_a_tie_has_neither_winner_nor_consensus() -> None:
    assert consensus_vote(["a", "b"], threshold=0.5) == (None, False)


@pytest.mark.parametrize("threshold", [0.0, -0.1, 1.01])
def test_consensus_threshold_outside_the_unit_interval_is_refused(threshold: float) -> None:
    with pytest.raises(ConfigError, match="threshold"):
        consensus_vote(["a"], threshold=threshold)


def test_weighted_vote_multiplies_voter_weight_by_stated_confidence() -> None:
    result = weighted_vote(
        [
            ("a", 1.0, "high"),  # 1.0
            ("a", 1.0, "low"),  # 0.4
            ("b", 2.0, "medium"),  # 1.4
            ("b", 1.0, None),  # unstated: 0.7
        ]
    )
    assert result.counts["a"] == pytest.approx(1.4)
    assert result.counts["b"] == pytest.approx(2.1)
    assert result.winner == "b"


def test_weighted_vote_reads_confidence_loosely_and_unknown_counts_as_medium() -> None:
    result = weighted_vote([("a", 1.0, " HIGH "), ("b", 1.0, "very sure")])
    assert result.counts == {"a": 1.0, "b": pytest.approx(CONFIDENCE_WEIGHT["medium"])}


def test_weighted_vote_can_overturn_a_head_count() -> None:
    votes = [("a", 1.0, "low"), ("a", 1.0, "low"), ("b", 1.0, "high")]
    assert majority_vote([v for v, _, _ in votes]) == "a"
    assert weighted_vote(votes).winner == "b"  # 0.8 against 1.0


def test_weighted_vote_with_a_custom_table() -> None:
    result = weighted_vote([("a", 1.0, "high"), ("b", 1.0, "low")], confidence_weight={"high": 1, "low": 3})
    assert result.winner == "b"


def test_normalize_text() -> None:
    assert normalize_text("  Paris. ") == normalize_text("paris") == "paris"
    assert normalize_text("New-York!") == "new york"


def test_cluster_vote_groups_equivalent_wordings_and_names_the_most_common() -> None:
    result = cluster_vote(["Paris.", "paris", "Lyon", "Paris.", " PARIS "])
    assert result.counts == {"Paris.": 4.0, "Lyon": 1.0}
    assert result.winner == "Paris."


def test_cluster_vote_label_ties_go_to_the_earliest_wording() -> None:
    assert cluster_vote(["paris", "Paris"]).winner == "paris"


def test_cluster_vote_with_a_user_similarity() -> None:
    def same_number(a: str, b: str) -> bool:
        return abs(float(a) - float(b)) < 0.01

    result = cluster_vote(["3.14", "3.141", "2.72", "3.1416"], same=same_number)
    assert result.counts == {"3.14": 3.0, "2.72": 1.0}
    # Without it, four different texts: a four-way tie.
    assert cluster_vote(["3.14", "3.141", "2.72", "3.1416"]).winner is None


def test_cluster_vote_with_weights_and_a_key() -> None:
    result = cluster_vote(["A", "b", "a"], key=str.lower, weights=[1.0, 5.0, 1.0])
    assert result.counts == {"A": 2.0, "b": 5.0}
    assert result.winner == "b"


def test_cluster_vote_refuses_mismatched_weights() -> None:
    with pytest.raises(ConfigError, match="2 weights for 3 answers"):
        cluster_vote(["a", "b", "c"], weights=[1.0, 1.0])


async def test_merge_and_synthesize_sends_the_chapter_prompt_and_returns_the_text() -> None:
    fake = FakeProvider(rules=[{"match": "synthesize", "reply": "one merged answer"}])
    merged = await merge_and_synthesize(["first draft", "second draft"], fake, "write a haiku")
    assert merged == "one merged answer"
    [request] = fake.calls
    prompt = request.messages[-1].content
    assert "Task: write a haiku" in prompt
    assert "Result 1:\nfirst draft\n\n---\n\nResult 2:\nsecond draft" in prompt
    assert request.max_tokens == 2048


async def test_merge_and_synthesize_is_charged_to_the_run_it_belongs_to() -> None:
    fake = FakeProvider(rules=[{"match": ".", "reply": "merged"}], price=Price(1.0, 1.0, 0.1, 1.25))
    budget = Budget(dollars=100.0)
    result = await run(lambda _: merge_and_synthesize(["a", "b"], fake, "t"), [0], budget=budget)
    assert result.values == ["merged"]
    assert budget.spent_tokens > 0
    assert budget.spent_dollars == pytest.approx(result.summary.cost)
