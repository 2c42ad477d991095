"""Prompt-cache-aware fan-out: the leader's call starts first and the others wait for its
first byte, so that they read the cache entry it writes instead of each writing their own.

The ordering is tested on the fake provider declaring a prompt cache; the cache bill on
the wire, through the Anthropic provider and the emulator's prompt-cache emulation."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field, replace
from typing import Any

import pytest

import quorum
from quorum import Adaptive, Capabilities, FakeProvider, Request, Usage, Voter, VotingWorkflow, errors
from quorum.llm.pricing import price_of
from quorum.patterns import CacheReport
from quorum.patterns.fanout import MIN_CACHE_TOKENS, LeaderFirst, worth_caching
from quorum.testing.emulator import Emulator

OPTIONS = ["acceptable", "needs_review", "rejected"]
CACHING = Capabilities(supports_schema=True, supports_cache=True)
MODEL = "claude-sonnet-5-5"
# A shared document long enough to be worth caching (over 1,024 tokens at ~4 chars a token).
DOCUMENT = "\n".join(f"Line {i}: the quarterly report says revenue grew in region {i}." for i in range(120))
PROMPT = f"Read this report and classify its tone.\n\n{DOCUMENT}"
ANSWER = {"decision": "acceptable", "confidence": "high", "reasoning": "fine"}


@dataclass
class Recorder:
    """A fake provider that declares a prompt cache and logs when each call starts and
    when its answer begins, by the voter's system prompt."""

    fake: FakeProvider
    log: list[tuple[str, str]] = field(default_factory=list)
    name: str = "fake"
    model: str = "fake"
    capabilities: Capabilities = CACHING

    async def complete(self, request: Request) -> quorum.Reply:
        who = request.system or "?"
        self.log.append(("start", who))
        outer = request.on_first_byte

        def first_byte() -> None:
            self.log.append(("first_byte", who))
            if outer is not None:
                outer()

        return await self.fake.complete(replace(request, on_first_byte=first_byte))

    def starts(self) -> list[str]:
        return [who for what, who in self.log if what == "start"]


def recorder(rules: list[dict[str, Any]] | None = None, latency: float = 0.02) -> Recorder:
    rules = rules if rules is not None else [{"match": ".", "data": ANSWER}]
    return Recorder(FakeProvider(rules=rules, latency=latency))


def ballot(n: int) -> list[Voter]:
    return [Voter(f"v{i}", f"You are reviewer v{i}.") for i in range(n)]


# -- when to hold the others back ------------------------------------------------------


def test_worth_caching_needs_a_cache_and_a_long_enough_shared_prefix() -> None:
    long_request = Request.of("q", prefix=PROMPT)
    assert worth_caching(recorder(), long_request)
    assert not worth_caching(FakeProvider(), long_request)  # no prompt cache declared
    assert not worth_caching(recorder(), Request.of("q", prefix="short"))
    assert not worth_caching(recorder(), Request.of("q", prefix=PROMPT), min_tokens=100_000)
    assert MIN_CACHE_TOKENS == 1024


# -- the ordering, on the fake -------------------------------------------------------


async def test_the_leader_starts_first_and_the_others_after_its_first_byte() -> None:
    stub = recorder(latency=0.2)  # room for the four followers to start before any ends
    result = await VotingWorkflow(llm=stub).run(ballot(5), PROMPT, OPTIONS)
    leader = "You are reviewer v0."
    assert stub.log[0] == ("start", leader)
    assert stub.log[1] == ("first_byte", leader)
    assert sorted(stub.starts()[1:]) == [f"You are reviewer v{i}." for i in range(1, 5)]
    assert stub.fake.max_in_flight == 5  # once released, the others run together
    assert result.winner == "acceptable"
    assert result.cache is not None  # reported whenever the ordering was used


async def test_every_voter_request_starts_with_the_same_cacheable_prefix() -> None:
    stub = recorder()
    await VotingWorkflow(llm=stub).run(ballot(3), PROMPT, OPTIONS)
    for request in stub.fake.calls:
        assert request.prefix == PROMPT
        assert request.cache_prefix is True
        assert PROMPT not in request.messages[-1].content  # the question is not sent twice
        assert "acceptable, needs_review, rejected" in request.messages[-1].content
    assert stub.fake.calls[0].system == "You are reviewer v0."


async def test_if_the_leader_fails_the_others_are_still_released() -> None:
    rules = [
        {"match": "reviewer v0\\.", "error": "bad_request", "latency": 0.01},
        {"match": ".", "data": ANSWER},
    ]
    stub = recorder(rules)
    result = await asyncio.wait_for(VotingWorkflow(llm=stub).run(ballot(4), PROMPT, OPTIONS), timeout=5)
    assert result.failed == 1
    assert result.votes[0].success is False
    assert [v.decision for v in result.votes[1:]] == ["acceptable"] * 3
    assert len(stub.starts()) == 4


async def test_a_leader_that_fails_before_its_first_byte_releases_the_others_at_once() -> None:
    def respond(request: Request) -> dict[str, str]:
        if request.system == "You are reviewer v0.":
            raise errors.AuthError("refused before answering", status=401, provider="fake")
        return ANSWER

    stub = Recorder(FakeProvider(responder=respond, latency=0.01))
    result = await asyncio.wait_for(VotingWorkflow(llm=stub).run(ballot(3), PROMPT, OPTIONS), timeout=5)
    assert ("first_byte", "You are reviewer v0.") not in stub.log
    assert stub.starts() == [f"You are reviewer v{i}." for i in range(3)]
    assert result.failed == 1
    assert "AuthError" in (result.votes[0].error or "")
    assert result.winner == "acceptable"


async def test_a_short_prompt_is_not_held_back() -> None:
    stub = recorder()
    result = await VotingWorkflow(llm=stub).run(ballot(4), "Classify: fine.", OPTIONS)
    assert [what for what, _ in stub.log[:4]] == ["start"] * 4
    assert result.cache is None


async def test_cache_aware_false_sends_everything_at_once_without_a_prefix() -> None:
    stub = recorder()
    result = await VotingWorkflow(llm=stub, cache_aware=False).run(ballot(4), PROMPT, OPTIONS)
    assert [what for what, _ in stub.log[:4]] == ["start"] * 4
    assert all(r.prefix is None and not r.cache_prefix for r in stub.fake.calls)
    assert result.cache is None


async def test_leader_first_with_adaptive_waves() -> None:
    stub = recorder()
    result = await VotingWorkflow(llm=stub, adaptive=Adaptive(wave=2, confidence=None)).run(
        ballot(5), PROMPT, OPTIONS
    )
    assert stub.log[:2] == [("start", "You are reviewer v0."), ("first_byte", "You are reviewer v0.")]
    assert result.winner == "acceptable"
    assert result.votes_used < 5


async def test_leader_first_object_disabled_holds_nobody() -> None:
    stub = recorder(latency=0.0)
    plan = LeaderFirst(enabled=False)
    replies = await asyncio.gather(
        *(plan.complete(stub, Request.of(f"q{i}", system=f"s{i}"), leader=i == 0) for i in range(3))
    )
    assert len(replies) == 3
    assert stub.starts() == ["s0", "s1", "s2"]


# -- the cache report ------------------------------------------------------------------


def test_cache_report_arithmetic() -> None:
    usages = [Usage(10, 5, cache_write_tokens=2000), *[Usage(10, 5, cache_read_tokens=2000)] * 4]
    report = CacheReport.of(MODEL, usages)
    price = price_of(MODEL)
    assert price is not None
    assert (report.writes, report.reads) == (2000, 8000)
    # Each read would otherwise have been a write: 8,000 x ($2.50 - $0.20) per million.
    assert report.saved_dollars == pytest.approx(8000 * (2.50 - 0.20) / 1e6)
    assert report.saved_dollars == pytest.approx(8000 * (price.cache_write - price.cache_read) / 1e6)
    assert report.line() == "prompt cache: 2,000 tokens written, 8,000 read; saved $0.0184"


def test_cache_report_with_an_unknown_price_says_so() -> None:
    report = CacheReport.of("some-unpriced-model", [Usage(cache_read_tokens=10)])
    assert report.saved_dollars is None
    assert report.line().endswith("saved unknown")


# -- on the wire: the Anthropic provider against the emulator ----------------------------


def wire_body_text(body: dict[str, Any]) -> str:
    system = body.get("system")
    parts = [system] if isinstance(system, str) else [b.get("text", "") for b in system or []]
    for message in body.get("messages", []):
        content = message["content"]
        parts += [content] if isinstance(content, str) else [b.get("text", "") for b in content]
    return "\n".join(parts)


async def vote_on_the_wire(**workflow_kw: Any) -> tuple[Any, list[dict[str, Any]]]:
    """A five-voter vote through the Anthropic provider against a fresh emulator (so a
    fresh prompt cache); the result and the request bodies the emulator received."""
    rules = [{"match": "acceptable, needs_review, rejected", "data": ANSWER}]
    # The emulator writes the prompt cache at half the latency: all five calls of an
    # unordered vote must arrive before that, which a busy machine may delay by 25 ms.
    async with Emulator(script=rules, latency=0.5) as emu:
        llm = quorum.connect(f"anthropic/{MODEL}", base_url=emu.anthropic_base_url, api_key="test-key")
        async with llm:
            result = await VotingWorkflow(llm=llm, **workflow_kw).run(ballot(5), PROMPT, OPTIONS)
        return result, [body for _path, body in emu.recent]


async def test_on_the_wire_the_leader_streams_first_and_the_others_follow() -> None:
    result, bodies = await vote_on_the_wire()
    assert result.winner == "acceptable"
    assert result.failed == 0
    assert len(bodies) == 5
    # The leader streams (to learn when its answer begins); the others are plain calls.
    assert bodies[0].get("stream") is True
    assert "reviewer v0." in wire_body_text(bodies[0])
    assert not any(b.get("stream") for b in bodies[1:])


async def test_on_the_wire_leader_first_pays_one_write_and_four_reads() -> None:
    result, bodies = await vote_on_the_wire()
    assert all(DOCUMENT in wire_body_text(body) for body in bodies)
    assert result.winner == "acceptable"
    writes = [v for v in result.votes if v.usage.cache_write_tokens]
    reads = [v for v in result.votes if v.usage.cache_read_tokens]
    assert [v.voter_name for v in writes] == ["v0"]
    assert [v.voter_name for v in reads] == ["v1", "v2", "v3", "v4"]
    prefix_tokens = writes[0].usage.cache_write_tokens
    assert prefix_tokens >= MIN_CACHE_TOKENS  # the shared document, not a voter's prompt
    assert all(v.usage.cache_read_tokens == prefix_tokens for v in reads)
    assert result.cache is not None
    assert (result.cache.writes, result.cache.reads) == (prefix_tokens, 4 * prefix_tokens)
    price = price_of(MODEL)
    assert price is not None
    saved = 4 * prefix_tokens * (price.cache_write - price.cache_read) / 1e6
    assert result.cache.saved_dollars == pytest.approx(saved)


async def test_on_the_wire_all_at_once_pays_a_write_per_call_and_costs_more() -> None:
    ordered, _ = await vote_on_the_wire()
    # Same cacheable requests, but the ordering is off (the prompt is "too short" for it).
    together, bodies = await vote_on_the_wire(cache_min_tokens=10**9)
    assert together.cache is None
    assert all(DOCUMENT in wire_body_text(body) for body in bodies)
    assert all(body.get("stream") is not True for body in bodies)
    writes = [v.usage.cache_write_tokens for v in together.votes]
    assert all(w >= MIN_CACHE_TOKENS for w in writes)  # every call wrote the document
    assert sum(v.usage.cache_read_tokens for v in together.votes) == 0
    assert ordered.cache is not None
    assert sum(writes) == 5 * ordered.cache.writes
    assert together.cost is not None
    assert ordered.cost is not None
    assert together.cost > ordered.cost
    # The difference is exactly four writes turned into four reads.
    assert together.cost - ordered.cost == pytest.approx(ordered.cache.saved_dollars)
