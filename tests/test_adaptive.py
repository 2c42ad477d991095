"""Adaptive voting: the stopping rules, the Beta posterior, and what an early stop does to
the calls still in flight and to the voters not yet asked."""

from __future__ import annotations

import asyncio
import random
from fractions import Fraction
from math import comb
from typing import Any

import pytest

from quorum import Adaptive, FakeProvider, Voter, VotingWorkflow
from quorum.errors import ConfigError
from quorum.patterns import change_probability, leader_posterior, tally

OPTIONS = ["acceptable", "needs_review", "rejected"]
LONG = 30.0  # a latency no test waits for: such calls are always cancelled


def ballot(n: int) -> list[Voter]:
    return [Voter(f"v{i}", f"You are v{i}.") for i in range(n)]


def rule(i: int, decision: str, latency: float = 0.0) -> dict[str, Any]:
    data = {"decision": decision, "confidence": "high", "reasoning": "r"}
    return {"match": f"You are v{i}\\.", "data": data, "latency": latency}


def leftover_tasks(before: set[asyncio.Task[Any]]) -> list[asyncio.Task[Any]]:
    me = asyncio.current_task()
    return [t for t in asyncio.all_tasks() - before if t is not me and not t.done()]


def counts(**votes: int) -> Any:
    return tally((answer, 1.0) for answer, n in votes.items() for _ in range(n))


# -- the rules, directly -----------------------------------------------------------------


def test_decided_when_outstanding_votes_cannot_change_the_winner() -> None:
    rules = Adaptive(confidence=None)
    assert rules.settled(counts(a=3), outstanding=2, counted=3) is not None  # 3 > 0 + 2
    assert rules.settled(counts(a=3, b=1), outstanding=1, counted=4) is not None  # 3 > 1 + 1
    assert "decided" in (rules.settled(counts(a=3), outstanding=2, counted=3) or "")


def test_not_decided_while_the_outstanding_votes_could_still_tie_or_overturn() -> None:
    rules = Adaptive(confidence=None)
    assert rules.settled(counts(a=2), outstanding=2, counted=2) is None  # 2-2 tie possible
    assert rules.settled(counts(a=3, b=1), outstanding=2, counted=4) is None  # 3-3 possible
    assert rules.settled(counts(a=1, b=1), outstanding=0, counted=2) is None  # a tie stays a tie


def test_min_votes_holds_off_any_stop() -> None:
    assert Adaptive(confidence=None, min_votes=2).settled(counts(a=1), outstanding=0, counted=1) is None
    assert Adaptive(confidence=None, min_votes=1).settled(counts(a=1), outstanding=0, counted=1)
    assert Adaptive(confidence=None).settled(tally([]), outstanding=0, counted=0) is None


def test_the_posterior_rule_fires_at_its_confidence_only() -> None:
    # a=4, b=0 with 5 outstanding: not decided (all 5 to the runner-up would overturn it),
    # but under Beta(5, 1) that happens with probability 1/252 (about 0.004).
    assert Adaptive(confidence=0.99).settled(counts(a=4), outstanding=5, counted=4) is not None
    assert Adaptive(confidence=0.997).settled(counts(a=4), outstanding=5, counted=4) is None
    assert Adaptive(confidence=None).settled(counts(a=4), outstanding=5, counted=4) is None


@pytest.mark.parametrize(
    ("a", "b", "remaining", "exact"),
    [
        (2, 0, 3, Fraction(1, 20)),  # all three to the runner-up: E[(1-p)^3], p ~ Beta(3, 1)
        (4, 0, 5, Fraction(1, 252)),
        (3, 1, 1, Fraction(0)),  # one vote cannot close a gap of two
        (2, 2, 0, Fraction(1)),  # a tie stays a tie
        (5, 0, 0, Fraction(0)),
    ],
)
def test_change_probability_exact_values(a: int, b: int, remaining: int, exact: Fraction) -> None:
    assert change_probability(a, b, remaining) == pytest.approx(float(exact), abs=1e-12)


def test_change_probability_matches_a_simulation() -> None:
    rng = random.Random(3)
    a, b, remaining, trials, changed = 3, 1, 4, 40_000, 0
    for _ in range(trials):
        p = rng.betavariate(a + 1, b + 1)
        runner = sum(rng.random() > p for _ in range(remaining))
        changed += b + runner >= a + remaining - runner
    assert change_probability(a, b, remaining) == pytest.approx(changed / trials, abs=0.01)


@pytest.mark.parametrize(
    ("a", "b", "exact"),
    [
        (0, 0, Fraction(1, 2)),
        (1, 0, Fraction(3, 4)),
        (2, 0, Fraction(7, 8)),
        (3, 0, Fraction(15, 16)),
        (4, 0, Fraction(31, 32)),
        (3, 1, Fraction(13, 16)),
        (2, 2, Fraction(1, 2)),
        (5, 2, Fraction(219, 256)),
    ],
)
def test_leader_posterior_exact_values(a: int, b: int, exact: Fraction) -> None:
    assert leader_posterior(a, b) == float(exact)


def test_leader_posterior_matches_the_beta_integral() -> None:
    # P(p > 1/2) for p ~ Beta(a+1, b+1), integrated directly: the density is
    # (a+b+1)! / (a! b!) * p^a (1-p)^b; expand (1-p)^b and integrate from 1/2 to 1.
    for a in range(7):
        for b in range(7):
            norm = Fraction(comb(a + b, a) * (a + b + 1))
            integral = sum(
                Fraction(comb(b, k) * (-1) ** k, a + k + 1) * (1 - Fraction(1, 2) ** (a + k + 1))
                for k in range(b + 1)
            )
            assert leader_posterior(a, b) == pytest.approx(float(norm * integral), abs=1e-12)


def test_leader_posterior_is_symmetric() -> None:
    for a in range(6):
        for b in range(6):
            assert leader_posterior(a, b) + leader_posterior(b, a) == pytest.approx(1.0)


@pytest.mark.parametrize(
    ("kw", "word"),
    [({"wave": 0}, "wave"), ({"confidence": 0.5}, "confidence"), ({"confidence": 1.0}, "confidence")],
)
def test_bad_settings_are_refused(kw: dict[str, Any], word: str) -> None:
    with pytest.raises(ConfigError, match=word):
        Adaptive(**kw)


# -- through the workflow ------------------------------------------------------------


async def test_a_unanimous_vote_asks_only_as_many_voters_as_needed() -> None:
    fake = FakeProvider(rules=[rule(i, "acceptable") for i in range(9)])
    result = await VotingWorkflow(llm=fake, adaptive=Adaptive(wave=1, confidence=None)).run(
        ballot(9), "Classify.", OPTIONS
    )
    # One at a time, the fifth agreeing vote is the first that 4 outstanding cannot overturn.
    assert result.winner == "acceptable"
    assert len(fake.calls) == 5
    assert result.votes_used == 5
    assert len(result.votes) == 5  # every answer paid for is counted
    assert result.voters_configured == 9
    assert result.stopped_early is not None
    assert "decided" in result.stopped_early


@pytest.mark.parametrize("wave", [1, 2, 3])
async def test_no_more_than_a_wave_is_asked_beyond_the_votes_counted(wave: int) -> None:
    fake = FakeProvider(rules=[rule(i, "acceptable") for i in range(9)])
    result = await VotingWorkflow(llm=fake, adaptive=Adaptive(wave=wave, confidence=None)).run(
        ballot(9), "Classify.", OPTIONS
    )
    assert result.winner == "acceptable"
    assert len(fake.calls) <= 5 + wave - 1
    assert fake.max_in_flight <= wave


async def test_the_posterior_rule_stops_earlier_than_decided() -> None:
    fake = FakeProvider(rules=[rule(i, "rejected") for i in range(9)])
    result = await VotingWorkflow(llm=fake, adaptive=Adaptive(wave=1, confidence=0.95)).run(
        ballot(9), "Classify.", OPTIONS
    )
    assert len(fake.calls) == 3  # 3-0 with 6 to come: overturned with P = 1/42 <= 0.05
    assert result.stopped_early is not None
    assert "settled" in result.stopped_early
    assert result.winner == "rejected"


async def test_a_split_vote_runs_to_the_end() -> None:
    decisions = ["acceptable", "rejected"] * 2 + ["needs_review"]
    fake = FakeProvider(rules=[rule(i, d) for i, d in enumerate(decisions)])
    result = await VotingWorkflow(llm=fake, adaptive=Adaptive(wave=1)).run(ballot(5), "Classify.", OPTIONS)
    assert len(fake.calls) == 5
    assert result.stopped_early is None
    assert result.winner is None
    assert result.tied == ["acceptable", "rejected"]


async def test_the_decided_stop_never_changes_the_outcome_of_the_full_vote() -> None:
    patterns = [
        ["acceptable", "acceptable", "rejected", "acceptable", "rejected"],
        ["rejected", "acceptable", "acceptable", "acceptable", "acceptable"],
        ["needs_review", "rejected", "rejected", "needs_review", "rejected", "rejected", "acceptable"],
    ]
    for decisions in patterns:
        n = len(decisions)
        fake = FakeProvider(rules=[rule(i, d) for i, d in enumerate(decisions)])
        full = await VotingWorkflow(llm=fake).run(ballot(n), "Classify.", OPTIONS)
        early = await VotingWorkflow(llm=fake, adaptive=Adaptive(wave=1, confidence=None)).run(
            ballot(n), "Classify.", OPTIONS
        )
        assert early.winner == full.winner
        assert early.votes_used <= n


async def test_failed_votes_count_as_asked_but_not_as_votes() -> None:
    rules = [{"match": "You are v0\\.", "error": "bad_request"}] + [
        rule(i, "acceptable") for i in range(1, 5)
    ]
    fake = FakeProvider(rules=rules)
    result = await VotingWorkflow(llm=fake, adaptive=Adaptive(wave=1, confidence=None)).run(
        ballot(5), "Classify.", OPTIONS
    )
    # v0 fails; v1..v3 agree: 3 > 0 + 1 outstanding.
    assert len(fake.calls) == 4
    assert result.failed == 1
    assert result.winner == "acceptable"


async def test_an_adaptive_stop_cancels_the_calls_in_flight_and_skips_the_rest() -> None:
    # Seven voters, three at a time. v0..v3 answer quickly and agree; v4..v6 would take
    # LONG. After v3: 4 agree, 3 outstanding, so the vote is decided.
    rules = [
        rule(i, "acceptable", latency=0.05 * (i + 1)) for i in range(4)
    ]  # 50 ms apart: in order when busy
    rules += [rule(i, "rejected", latency=LONG) for i in range(4, 7)]
    fake = FakeProvider(rules=rules)
    before = asyncio.all_tasks()
    workflow = VotingWorkflow(llm=fake, adaptive=Adaptive(wave=3, confidence=None))
    result = await asyncio.wait_for(workflow.run(ballot(7), "Classify.", OPTIONS), timeout=5)
    assert result.winner == "acceptable"
    assert fake.cancelled > 0
    assert fake.in_flight == 0
    assert result.votes_used < result.voters_configured == 7
    assert len(fake.calls) == result.votes_used
    assert fake.cancelled == result.votes_used - 4
    assert [v.voter_name for v in result.votes] == ["v0", "v1", "v2", "v3"]
    assert result.execution_time < 1.0
    await asyncio.sleep(0)
    assert leftover_tasks(before) == []


async def test_all_at_once_adaptive_cancels_the_stragglers() -> None:
    rules = [rule(i, "rejected", latency=0.005) for i in range(3)]
    rules += [rule(i, "acceptable", latency=LONG) for i in range(3, 5)]
    fake = FakeProvider(rules=rules)
    before = asyncio.all_tasks()
    result = await VotingWorkflow(llm=fake, adaptive=Adaptive(wave=None, confidence=None)).run(
        ballot(5), "Classify.", OPTIONS
    )
    assert result.winner == "rejected"
    assert fake.cancelled == 2
    assert result.votes_used == 5  # all were started at once
    await asyncio.sleep(0)
    assert leftover_tasks(before) == []


async def test_without_adaptive_every_voter_is_asked() -> None:
    fake = FakeProvider(rules=[rule(i, "acceptable") for i in range(9)])
    result = await VotingWorkflow(llm=fake).run(ballot(9), "Classify.", OPTIONS)
    assert len(fake.calls) == result.votes_used == 9
    assert result.stopped_early is None


async def test_weighted_adaptive_counts_outstanding_voter_weights() -> None:
    # v0 and v1 (weight 1, high confidence) agree; v2 weighs 3: it could still overturn.
    rules = [rule(0, "acceptable"), rule(1, "acceptable"), rule(2, "rejected")]
    fake = FakeProvider(rules=rules)
    voters = [Voter("v0", "You are v0."), Voter("v1", "You are v1."), Voter("v2", "You are v2.", weight=3.0)]
    result = await VotingWorkflow(
        llm=fake, strategy="weighted", adaptive=Adaptive(wave=1, confidence=None)
    ).run(voters, "Classify.", OPTIONS)
    assert len(fake.calls) == 3
    assert result.winner == "rejected"
