"""Voting against the fake provider: structured answers and the text fallback, exact
matching, explicit ties, invalid and failed votes, consensus, weights, free-text clusters
and configuration errors."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest

from quorum import Capabilities, FakeProvider, Status, Voter, VotingWorkflow
from quorum.engine import connect
from quorum.errors import ConfigError
from quorum.llm import Price
from quorum.patterns.voting import ERROR, UNKNOWN
from quorum.testing.emulator import Emulator

OPTIONS = ["acceptable", "needs_review", "rejected"]
TEXT_ONLY = Capabilities(supports_schema=False)
PRICE = Price(input=3.0, output=15.0, cache_read=0.3, cache_write=3.75)


def voters(*names: str, **kw: Any) -> list[Voter]:
    return [Voter(name, f"You are {name}.", **kw) for name in names]


def says(name: str, decision: str, confidence: str = "high", **extra: Any) -> dict[str, Any]:
    """A rule: voter ``name`` answers ``decision`` as structured data."""
    data = {"decision": decision, "confidence": confidence, "reasoning": f"{name} thinks so"}
    return {"match": f"You are {name}\\.", "data": data, **extra}


def writes(name: str, text: str, **extra: Any) -> dict[str, Any]:
    """A rule: voter ``name`` answers in text."""
    return {"match": f"You are {name}\\.", "reply": text, **extra}


def fails(name: str, kind: str = "bad_request") -> dict[str, Any]:
    return {"match": f"You are {name}\\.", "error": kind}


async def vote(
    rules: Sequence[dict[str, Any]],
    names: Sequence[str],
    options: Sequence[str] | None = OPTIONS,
    *,
    capabilities: Capabilities | None = None,
    voter_kw: dict[str, Any] | None = None,
    **workflow_kw: Any,
) -> tuple[Any, FakeProvider]:
    fake_kw: dict[str, Any] = {"rules": list(rules)}
    if capabilities is not None:
        fake_kw["capabilities"] = capabilities
    fake = FakeProvider(**fake_kw)
    result = await VotingWorkflow(llm=fake, **workflow_kw).run(
        voters(*names, **(voter_kw or {})), "Classify this comment.", options
    )
    return result, fake


# -- asking and reading ------------------------------------------------------------------


async def test_structured_answers_are_asked_for_with_the_options_as_an_enum() -> None:
    rules = [says("a", "acceptable"), says("b", "acceptable", "medium"), says("c", "rejected", "low")]
    result, fake = await vote(rules, "abc")
    assert [v.decision for v in result.votes] == ["acceptable", "acceptable", "rejected"]
    assert [v.confidence for v in result.votes] == ["high", "medium", "low"]
    assert result.votes[0].reasoning == "a thinks so"
    assert result.winner == "acceptable"
    assert result.vote_counts == {"acceptable": 2, "rejected": 1}
    assert result.consensus is True  # 2/3 >= 0.6
    assert result.agreement == pytest.approx(2 / 3)
    for request in fake.calls:
        assert request.schema is not None
        assert request.schema["properties"]["decision"]["enum"] == OPTIONS
        assert "acceptable, needs_review, rejected" in request.messages[-1].content
    assert {r.system for r in fake.calls} == {"You are a.", "You are b.", "You are c."}


async def test_votes_come_back_in_voter_order_whatever_the_finishing_order() -> None:
    rules = [
        says("slow", "rejected", latency=0.03),
        says("mid", "acceptable", latency=0.015),
        says("fast", "acceptable", latency=0.0),
    ]
    result, _ = await vote(rules, ["slow", "mid", "fast"])
    assert [v.voter_name for v in result.votes] == ["slow", "mid", "fast"]
    assert result.winner == "acceptable"


async def test_each_voter_sends_its_own_temperature() -> None:
    fake = FakeProvider(rules=[says("hot", "acceptable"), says("cold", "acceptable")])
    ballot = [Voter("hot", "You are hot.", temperature=0.9), Voter("cold", "You are cold.", temperature=0.1)]
    await VotingWorkflow(llm=fake).run(ballot, "Classify.", OPTIONS)
    assert {r.system: r.temperature for r in fake.calls} == {"You are hot.": 0.9, "You are cold.": 0.1}


async def test_the_text_format_is_used_when_the_provider_has_no_structured_output() -> None:
    rules = [
        writes("a", "DECISION: Needs Review\nCONFIDENCE: Medium\nREASONING: borderline insult"),
        writes("b", "**DECISION:** needs_review\n**CONFIDENCE:** high\n**REASONING:** tone"),
        writes("c", "Let me think.\n  decision: rejected\nconfidence: low"),
    ]
    result, fake = await vote(rules, "abc", capabilities=TEXT_ONLY)
    assert [v.decision for v in result.votes] == ["needs_review", "needs_review", "rejected"]
    assert [v.confidence for v in result.votes] == ["medium", "high", "low"]
    assert result.votes[0].reasoning == "borderline insult"
    assert result.votes[2].reasoning is None
    assert result.winner == "needs_review"
    prompt = fake.calls[0].messages[-1].content
    assert fake.calls[0].schema is None
    assert "You must choose exactly one of these options: acceptable, needs_review, rejected" in prompt
    assert "DECISION: [your choice]" in prompt
    assert "CONFIDENCE: [high/medium/low]" in prompt


async def test_structured_false_forces_the_text_format() -> None:
    result, fake = await vote([writes("a", "DECISION: rejected")], "a", structured=False)
    assert fake.calls[0].schema is None
    assert result.winner == "rejected"


async def test_a_voter_that_ignores_the_schema_is_read_as_text() -> None:
    rules = [writes("a", "DECISION: rejected\nCONFIDENCE: high\nREASONING: spam"), says("b", "rejected")]
    result, fake = await vote(rules, "ab")
    assert fake.calls[0].schema is not None  # structured output was asked for
    assert result.votes[0].decision == "rejected"
    assert result.votes[0].reasoning == "spam"
    assert result.failed == 0
    assert result.winner == "rejected"


# -- ties, invalid votes, failures -----------------------------------------------------


@pytest.mark.parametrize("order", [["a", "b", "c", "d"], ["c", "d", "a", "b"], ["a", "c", "b", "d"]])
async def test_a_tie_is_explicit_and_never_broken_by_order(order: list[str]) -> None:
    rules = [
        says("a", "acceptable"),
        says("b", "acceptable"),
        says("c", "rejected"),
        says("d", "rejected"),
    ]
    result, _ = await vote(rules, order)
    assert result.winner is None
    assert result.tied == ["acceptable", "rejected"]
    assert result.consensus is False
    assert result.vote_counts == {"acceptable": 2, "rejected": 2}


async def test_answers_outside_the_options_are_invalid_counted_shown_and_never_win() -> None:
    rules = [
        writes("a", "DECISION: unacceptable"),
        writes("b", "DECISION: unacceptable"),
        writes("c", "DECISION: not acceptable"),
        writes("d", "DECISION: acceptable"),
        writes("e", "I refuse to answer in that format."),
    ]
    result, _ = await vote(rules, "abcde", capabilities=TEXT_ONLY)
    assert result.invalid == 4
    assert result.failed == 0
    assert [v.decision for v in result.votes] == [UNKNOWN, UNKNOWN, UNKNOWN, "acceptable", UNKNOWN]
    assert [v.answer for v in result.votes[:3]] == ["unacceptable", "unacceptable", "not acceptable"]
    assert not any(v.valid for v in result.votes if v.decision == UNKNOWN)
    assert result.winner == "acceptable"  # the only valid vote, however many invalid ones agree
    assert result.vote_counts == {"acceptable": 1}
    assert UNKNOWN not in result.scores
    # One valid vote among five cast is no consensus, though it is all of the valid ones.
    assert result.agreement == 1.0
    assert result.consensus is False


async def test_failed_calls_do_not_count_against_consensus_but_invalid_answers_do() -> None:
    rules = [says("a", "rejected"), says("b", "rejected"), fails("c"), writes("d", "DECISION: maybe")]
    result, _ = await vote(rules, "abcd", capabilities=TEXT_ONLY, consensus_threshold=0.6)
    # a, b valid; c failed (no vote); d invalid: 2 of 3 votes cast = 0.67 >= 0.6
    assert (result.failed, result.invalid, result.winner) == (1, 1, "rejected")
    assert result.consensus is True
    stricter, _ = await vote(rules, "abcd", capabilities=TEXT_ONLY, consensus_threshold=0.7)
    assert stricter.consensus is False


async def test_an_answer_read_as_text_after_a_schema_failure_is_still_billed() -> None:
    rules = [writes("a", "DECISION: rejected\nCONFIDENCE: high\nREASONING: spam")]
    fake = FakeProvider(rules=rules, price=PRICE)
    result = await VotingWorkflow(llm=fake).run(voters("a"), "Classify this comment.", OPTIONS)
    assert result.votes[0].decision == "rejected"
    assert result.votes[0].usage.output_tokens > 0
    assert result.usage == result.votes[0].usage  # charged to the run like any other call
    assert result.cost is not None
    assert result.cost > 0


async def test_only_invalid_votes_means_no_winner() -> None:
    result, _ = await vote(
        [writes("a", "DECISION: maybe"), writes("b", "DECISION: maybe")], "ab", capabilities=TEXT_ONLY
    )
    assert result.winner is None
    assert result.tied == []
    assert result.consensus is False
    assert result.vote_counts == {}
    assert result.invalid == 2


async def test_partial_failures_are_counted_and_the_rest_still_aggregated() -> None:
    rules = [
        says("a", "rejected"),
        fails("b"),
        says("c", "rejected"),
        fails("d", "auth"),
        says("e", "acceptable"),
    ]
    result, fake = await vote(rules, "abcde")
    assert result.failed == 2
    assert result.invalid == 0
    failed = [v for v in result.votes if not v.success]
    assert [v.voter_name for v in failed] == ["b", "d"]
    assert all(v.decision == ERROR for v in failed)
    assert "BadRequest" in (failed[0].error or "")
    assert "AuthError" in (failed[1].error or "")
    assert result.winner == "rejected"
    assert result.vote_counts == {"rejected": 2, "acceptable": 1}
    assert result.consensus is True  # 2 of the 3 valid votes
    assert len(fake.calls) == 5  # permanent errors are not retried
    assert result.summary.count(Status.ERROR) == 2


async def test_all_voters_failing_gives_no_winner_and_says_why() -> None:
    result, _ = await vote([fails("a"), fails("b")], "ab")
    assert result.winner is None
    assert result.failed == 2
    assert result.consensus is False
    assert all(v.error for v in result.votes)


# -- consensus and strategies ----------------------------------------------------------


@pytest.mark.parametrize(("threshold", "reached"), [(0.5, True), (0.6, True), (0.61, False), (1.0, False)])
async def test_consensus_threshold(threshold: float, reached: bool) -> None:
    rules = [says(n, "rejected") for n in "abc"] + [says("d", "acceptable"), says("e", "needs_review")]
    result, _ = await vote(rules, "abcde", consensus_threshold=threshold)
    assert result.winner == "rejected"
    assert result.consensus is reached
    assert result.consensus_threshold == threshold


@pytest.mark.parametrize("threshold", [0.0, 1.5, -1.0])
def test_a_threshold_outside_the_unit_interval_is_refused(threshold: float) -> None:
    with pytest.raises(ConfigError, match="consensus_threshold"):
        VotingWorkflow(llm=FakeProvider(), consensus_threshold=threshold)


async def test_weighted_strategy_counts_voter_weight_times_stated_confidence() -> None:
    rules = [
        says("a", "acceptable", "low"),
        says("b", "acceptable", "low"),
        says("senior", "rejected", "high"),
    ]
    fake = FakeProvider(rules=rules)
    ballot = [
        Voter("a", "You are a."),
        Voter("b", "You are b."),
        Voter("senior", "You are senior.", weight=1.5),
    ]
    majority = await VotingWorkflow(llm=fake).run(ballot, "Classify.", OPTIONS)
    weighted = await VotingWorkflow(llm=fake, strategy="weighted").run(ballot, "Classify.", OPTIONS)
    assert majority.winner == "acceptable"
    assert weighted.winner == "rejected"
    assert weighted.scores == {"acceptable": pytest.approx(0.8), "rejected": pytest.approx(1.5)}
    assert weighted.vote_counts == {"acceptable": 2, "rejected": 1}  # the chapter's head count
    assert weighted.agreement == pytest.approx(1.5 / 2.3)


def test_an_unknown_strategy_is_refused() -> None:
    with pytest.raises(ConfigError, match="strategy"):
        VotingWorkflow(llm=FakeProvider(), strategy="loudest")  # type: ignore[arg-type]


async def test_free_text_votes_cluster_equivalent_answers() -> None:
    rules = [says("a", "Paris"), says("b", "paris."), says("c", "Lyon"), says("d", " PARIS ")]
    result, fake = await vote(rules, "abcd", options=None)
    assert "enum" not in fake.calls[0].schema["properties"]["decision"]  # type: ignore[index]
    assert result.winner == "Paris"
    assert result.vote_counts == {"Paris": 3, "Lyon": 1}
    assert result.invalid == 0


async def test_free_text_votes_with_a_user_similarity() -> None:
    def same(a: str, b: str) -> bool:
        return abs(float(a) - float(b)) < 0.01

    rules = [says("a", "3.14"), says("b", "3.1416"), says("c", "2.72"), says("d", "3.141")]
    plain, _ = await vote(rules, "abcd", options=None)
    similar, _ = await vote(rules, "abcd", options=None, similar=same)
    assert plain.winner is None  # four different texts
    assert similar.winner == "3.14"
    assert similar.vote_counts == {"3.14": 3, "2.72": 1}


async def test_free_text_empty_answers_are_invalid() -> None:
    result, _ = await vote(
        [writes("a", "DECISION:"), writes("b", "DECISION: 42")], "ab", options=None, capabilities=TEXT_ONLY
    )
    assert result.invalid == 1
    assert result.winner == "42"


async def test_usage_and_cost_add_up_over_the_votes() -> None:
    fake = FakeProvider(rules=[says(n, "acceptable") for n in "abc"], price=PRICE)
    result = await VotingWorkflow(llm=fake).run(voters(*"abc"), "Classify.", OPTIONS)
    assert result.usage.input_tokens == sum(v.usage.input_tokens for v in result.votes) > 0
    assert result.cost == pytest.approx(sum(v.cost or 0.0 for v in result.votes))
    assert result.cost is not None
    assert result.cost > 0
    assert result.votes_used == result.voters_configured == 3
    assert result.stopped_early is None
    assert result.cache is None  # the fake declares no prompt cache


async def test_the_chapter_defaults_and_fields_are_kept() -> None:
    result, _ = await vote([says("a", "acceptable")], "a")
    for name in ("votes", "winner", "vote_counts", "consensus", "consensus_threshold", "execution_time"):
        assert hasattr(result, name)
    assert result.consensus_threshold == 0.6
    assert result.execution_time >= 0
    assert Voter("x", "y").temperature == 1.0


# -- configuration errors --------------------------------------------------------------


async def test_voter_names_must_be_unique() -> None:
    fake = FakeProvider()
    with pytest.raises(ConfigError, match="unique"):
        await VotingWorkflow(llm=fake).run(voters("a", "b", "a"), "Classify.", OPTIONS)
    assert fake.calls == []


@pytest.mark.parametrize(
    "options", [["needs_review", "Needs Review"], ["ok", "OK"], ["needs-review", "needs_review", "x"]]
)
async def test_options_that_collide_once_folded_are_refused(options: list[str]) -> None:
    fake = FakeProvider()
    with pytest.raises(ConfigError, match="collide"):
        await VotingWorkflow(llm=fake).run(voters("a"), "Classify.", options)
    assert fake.calls == []


async def test_a_vote_needs_voters_and_options_when_given_need_a_choice() -> None:
    fake = FakeProvider()
    with pytest.raises(ConfigError, match="at least one voter"):
        await VotingWorkflow(llm=fake).run([], "Classify.", OPTIONS)
    with pytest.raises(ConfigError, match="at least one choice"):
        await VotingWorkflow(llm=fake).run(voters("a"), "Classify.", [])
    assert fake.calls == []


async def test_concurrency_bounds_the_voters_in_flight() -> None:
    fake = FakeProvider(rules=[says(n, "acceptable") for n in "abcdef"], latency=0.005)
    result = await VotingWorkflow(llm=fake, concurrency=2).run(voters(*"abcdef"), "Classify.", OPTIONS)
    assert fake.max_in_flight == 2
    assert result.votes_used == 6
    assert result.vote_counts == {"acceptable": 6}


async def test_a_json_answer_read_as_text_is_read_by_its_fields() -> None:
    rules = [
        writes("a", '{"decision": "Needs Review", "confidence": "low", "reasoning": "borderline"}'),
        writes("b", '```json\n{"decision": "needs-review", "confidence": "high"}\n```'),
        writes("c", '{"decision": "unacceptable", "confidence": "high", "reasoning": "no"}'),
    ]
    result, _ = await vote(rules, "abc", capabilities=TEXT_ONLY)
    assert [v.decision for v in result.votes] == ["needs_review", "needs_review", UNKNOWN]
    assert [v.answer for v in result.votes] == ["Needs Review", "needs-review", "unacceptable"]
    assert result.votes[0].confidence == "low"
    assert result.votes[0].reasoning == "borderline"
    assert result.invalid == 1


async def test_on_the_wire_a_structured_answer_off_the_enum_still_names_its_option() -> None:
    # Tool input is not held to the enum: "Needs Review" breaks the schema, and the
    # provider hands back the tool input as text; the vote still reads the option it names.
    rules = [
        {
            "match": "You are a\\.",
            "data": {"decision": "Needs Review", "confidence": "high", "reasoning": "r"},
        },
        {
            "match": "You are b\\.",
            "data": {"decision": "needs_review", "confidence": "high", "reasoning": "r"},
        },
    ]
    async with Emulator(script=rules) as emu:
        llm = connect("anthropic/claude-sonnet-5-5", base_url=emu.anthropic_base_url, api_key="test-key")
        async with llm:
            result = await VotingWorkflow(llm=llm).run(voters("a", "b"), "Classify.", OPTIONS)
    assert [v.decision for v in result.votes] == ["needs_review", "needs_review"]
    assert result.votes[0].answer == "Needs Review"
    assert result.invalid == 0
    assert result.winner == "needs_review"
