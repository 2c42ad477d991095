"""Voting: several voters answer the same question; the answers are aggregated.

The chapter's ``Voter``, ``Vote``, ``VotingResult`` and ``VotingWorkflow`` keep their
names, parameters and fields. Underneath: every call goes through the engine (limits,
retries, budgets, cancellation); answers come back as structured output where the provider
supports it, with the chapter's text format as the fallback; answers are matched to the
options exactly (``normalize``); ties are explicit; an answer outside the options is an
invalid vote, counted and shown, never a winner. Optional: weighted aggregation, adaptive
early stopping (``Adaptive``), and a prompt-cache-aware fan-out.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from quorum.engine.connection import LazyConnection
from quorum.engine.outcome import Outcome, Summary
from quorum.engine.runner import stream
from quorum.errors import ConfigError, InvalidReply
from quorum.llm.provider import Provider
from quorum.llm.types import Reply, Request, Usage
from quorum.patterns import decision
from quorum.patterns.adaptive import Adaptive
from quorum.patterns.aggregation import Tally, cluster_vote, tally, weighted_vote
from quorum.patterns.fanout import MIN_CACHE_TOKENS, CacheReport, LeaderFirst, worth_caching
from quorum.patterns.normalize import fold, normalize_decision

UNKNOWN = "UNKNOWN"  # the chapter's marker for an answer that names no option
ERROR = "ERROR"  # the chapter's marker for a vote whose call failed
Strategy = Literal["majority", "weighted"]


@dataclass
class Voter:
    """One voter: a perspective (system prompt), a temperature and a weight."""

    name: str
    system_prompt: str
    temperature: float = 1.0
    weight: float = 1.0


@dataclass
class Vote:
    """One voter's vote. ``decision`` is the matched option, ``UNKNOWN`` when the answer
    (kept in ``answer``) named none, ``ERROR`` when the call failed (``error`` says why)."""

    voter_name: str
    decision: str
    confidence: str | None = None
    reasoning: str | None = None
    success: bool = True
    error: str | None = None
    answer: str | None = None
    weight: float = 1.0
    usage: Usage = field(default_factory=Usage)
    cost: float | None = None
    latency_s: float = 0.0

    @property
    def valid(self) -> bool:
        return self.success and self.decision not in (UNKNOWN, ERROR)


@dataclass
class VotingResult:
    """The chapter's fields, then: ``tied`` options when there is no winner, counts of
    ``invalid`` and ``failed`` votes, how many voters were asked against configured
    (adaptive voting asks fewer), usage, cost and the prompt-cache report."""

    votes: list[Vote]
    winner: str | None
    vote_counts: dict[str, int]
    consensus: bool
    consensus_threshold: float
    execution_time: float
    tied: list[str] = field(default_factory=list)
    invalid: int = 0
    failed: int = 0
    votes_used: int = 0
    voters_configured: int = 0
    stopped_early: str | None = None
    scores: dict[str, float] = field(default_factory=dict)
    agreement: float = 0.0  # the winner's share of the valid (weighted) votes
    # ``consensus`` is stricter: the winner's share of all votes cast, invalid ones included
    usage: Usage = field(default_factory=Usage)
    cost: float | None = None
    cache: CacheReport | None = None
    summary: Summary = field(default_factory=Summary)


class VotingWorkflow:
    """Run voters on one prompt in parallel and aggregate their decisions.

    ``model`` (a model string; ``None`` picks the default) or ``llm`` (a provider or
    connection). ``strategy``: "majority" (one voter, one vote) or "weighted" (voter
    weight times stated confidence). ``adaptive``: stop early once settled. ``structured``:
    force (True) or forbid (False) structured output; by default used when supported.
    ``similar``: for votes without options, when two free-text answers are the same.
    """

    llm = LazyConnection()

    def __init__(
        self,
        model: str | None = None,
        max_tokens: int = 1024,
        consensus_threshold: float = 0.6,
        *,
        llm: Provider | None = None,
        strategy: Strategy = "majority",
        adaptive: Adaptive | None = None,
        structured: bool | None = None,
        concurrency: int | None = None,
        cache_aware: bool = True,
        cache_min_tokens: int = MIN_CACHE_TOKENS,
        similar: Callable[[str, str], bool] | None = None,
    ) -> None:
        if not 0 < consensus_threshold <= 1:
            raise ConfigError(f"consensus_threshold is a share in (0, 1], got {consensus_threshold}")
        if strategy not in ("majority", "weighted"):
            raise ConfigError(f"strategy must be 'majority' or 'weighted', got {strategy!r}")
        self.model = model
        self.max_tokens = max_tokens
        self.consensus_threshold = consensus_threshold
        self.strategy = strategy
        self.adaptive = adaptive
        self.structured = structured
        self.concurrency = concurrency
        self.cache_aware = cache_aware
        self.cache_min_tokens = cache_min_tokens
        self.similar = similar
        self.llm = llm

    async def run(
        self, voters: Sequence[Voter], prompt: str, options: Sequence[str] | None = None
    ) -> VotingResult:
        """Every voter's vote on ``prompt`` (choosing among ``options`` if given), aggregated."""
        _check_ballot(voters, options)
        started = time.perf_counter()
        # store: each voter is a sample of its own, so the response cache keeps one answer per voter
        requests = [
            replace(self._request(v, prompt, options), metadata={"sample": str(i)})
            for i, v in enumerate(voters)
        ]
        plan = LeaderFirst(self.cache_aware and worth_caching(self.llm, requests[0], self.cache_min_tokens))
        launched = 0

        async def cast(index: int) -> Reply:
            nonlocal launched
            launched += 1
            try:
                return await plan.complete(self.llm, requests[index], leader=index == 0)
            except InvalidReply as exc:
                if exc.text is None:
                    raise
                # Structured output failed but the voter did answer: read it as text. The
                # connection already charged the call; the usage is kept for the vote.
                usage = exc.usage if isinstance(exc.usage, Usage) else Usage()
                return Reply(text=exc.text, model=self.llm.model, usage=usage, cost=exc.cost)

        outcomes, summary, stopped = await self._collect(cast, voters, options)
        votes = [self._vote(voters[o.index], o, options) for o in outcomes]
        result = self._aggregate(votes, options)
        result.execution_time = time.perf_counter() - started
        result.votes_used, result.voters_configured, result.stopped_early = launched, len(voters), stopped
        result.usage, result.cost, result.summary = summary.usage, summary.cost, summary
        if plan.enabled:
            result.cache = CacheReport.of(self.llm.model, (o.usage for o in outcomes))
        return result

    # -- asking --------------------------------------------------------------------------

    def _request(self, voter: Voter, prompt: str, options: Sequence[str] | None) -> Request:
        structured = self.structured if self.structured is not None else self.llm.capabilities.supports_schema
        ask = decision.structured_prompt if structured else decision.text_prompt
        schema = decision.decision_schema(options) if structured else None
        common: dict[str, Any] = {
            "max_tokens": self.max_tokens,
            "temperature": voter.temperature,
            "schema": schema,
            "schema_name": "vote",
        }
        caps = self.llm.capabilities
        if self.cache_aware and (caps.supports_cache or caps.reuses_prefix):
            # The shared question goes first so every voter's request starts with it.
            instructions = ask("", options).strip()
            return Request.of(
                instructions, system=voter.system_prompt, prefix=prompt, cache_prefix=True, **common
            )
        return Request.of(ask(prompt, options), system=voter.system_prompt, **common)

    async def _collect(
        self, cast: Callable[[int], Any], voters: Sequence[Voter], options: Sequence[str] | None
    ) -> tuple[list[Outcome[Reply]], Summary, str | None]:
        wave = self.concurrency or len(voters)
        if self.adaptive is not None and self.adaptive.wave is not None:
            wave = min(wave, self.adaptive.wave)
        outcomes: list[Outcome[Reply]] = []
        stopped = None
        names = [v.name for v in voters]
        gate = _Gate(len(voters), wave) if self.adaptive is not None else None
        ballot = gate.indices() if gate is not None else range(len(voters))
        async with stream(cast, ballot, concurrency=wave, ids=lambda _i, x: names[x]) as flow:
            async for outcome in flow:
                outcomes.append(outcome)
                stopped = self._settled(outcomes, voters, options)
                if stopped:
                    outcomes.extend(flow.ready())  # answers already back count too
                    break
                if gate is not None:
                    gate.counted_one()
        outcomes.sort(key=lambda o: o.index)
        return outcomes, flow.summary, stopped

    def _settled(
        self, outcomes: list[Outcome[Reply]], voters: Sequence[Voter], options: Sequence[str] | None
    ) -> str | None:
        if self.adaptive is None or len(outcomes) == len(voters):
            return None
        votes = [self._vote(voters[o.index], o, options) for o in outcomes]
        done = {o.index for o in outcomes}
        outstanding = sum(self._weight(v.weight) for i, v in enumerate(voters) if i not in done)
        counted = sum(v.valid for v in votes)
        return self.adaptive.settled(self._tally(votes, options), outstanding, counted)

    def _weight(self, weight: float) -> float:
        """A voter's weight counts only under the weighted strategy."""
        return weight if self.strategy == "weighted" else 1.0

    # -- reading and counting ------------------------------------------------------------

    def _vote(self, voter: Voter, outcome: Outcome[Reply], options: Sequence[str] | None) -> Vote:
        if not outcome.ok or outcome.value is None:
            return Vote(
                voter.name,
                ERROR,
                success=False,
                error=outcome.error_message,
                weight=voter.weight,
                usage=outcome.usage,
                cost=outcome.cost,
                latency_s=outcome.duration,
            )
        reply = outcome.value
        answer = decision.from_data(reply.data) if reply.data is not None else decision.from_text(reply.text)
        if options:
            chosen = normalize_decision(answer.decision, options) or UNKNOWN
        else:
            chosen = answer.decision or UNKNOWN
        return Vote(
            voter.name,
            chosen,
            answer.confidence,
            answer.reasoning,
            answer=answer.decision,
            weight=voter.weight,
            usage=reply.usage,
            cost=reply.cost,
            latency_s=outcome.duration,
        )

    def _tally(self, votes: Sequence[Vote], options: Sequence[str] | None) -> Tally:
        valid = [v for v in votes if v.valid]
        if not options:
            weights = [self._weight(v.weight) for v in valid]
            return cluster_vote([v.decision for v in valid], same=self.similar, weights=weights)
        if self.strategy == "weighted":
            return weighted_vote((v.decision, v.weight, v.confidence) for v in valid)
        return tally((v.decision, 1.0) for v in valid)

    def _aggregate(self, votes: list[Vote], options: Sequence[str] | None) -> VotingResult:
        result = self._tally(votes, options)
        counts = _whole_counts(votes, result, options, self.similar)
        return VotingResult(
            votes=votes,
            winner=result.winner,
            vote_counts=counts,
            consensus=self._consensus(result, votes),
            consensus_threshold=self.consensus_threshold,
            execution_time=0.0,
            tied=list(result.tied),
            invalid=sum(v.success and v.decision == UNKNOWN for v in votes),
            failed=sum(not v.success for v in votes),
            scores=dict(result.counts),
            agreement=result.share,
        )

    def _consensus(self, result: Tally, votes: Sequence[Vote]) -> bool:
        """The winner's share of every vote cast, invalid answers included: a voter who
        answered outside the options did not agree, so one valid vote among five invalid
        ones is no consensus. Failed calls cast no vote and are left out, as in the chapter."""
        if result.winner is None:
            return False
        invalid = sum(self._weight(v.weight) for v in votes if v.success and v.decision == UNKNOWN)
        cast = result.total + invalid
        return cast > 0 and result.counts[result.winner] / cast >= self.consensus_threshold


class _Gate:
    """Voter indices for adaptive voting, handed out so that no more than ``wave`` voters
    are ever asked beyond the votes already counted. The engine starts the next task the
    moment one finishes; without this gate it would ask the next voter before the
    stopping rule had seen the vote that settles the result, paying for answers that are
    then thrown away."""

    def __init__(self, count: int, wave: int) -> None:
        self.count = count
        self.wave = wave
        self.counted = 0
        self._moved = asyncio.Event()

    async def indices(self) -> AsyncIterator[int]:
        for index in range(self.count):
            while index - self.counted >= self.wave:
                self._moved.clear()
                await self._moved.wait()
            yield index

    def counted_one(self) -> None:
        self.counted += 1
        self._moved.set()


def _whole_counts(
    votes: Sequence[Vote],
    result: Tally,
    options: Sequence[str] | None,
    similar: Callable[[str, str], bool] | None,
) -> dict[str, int]:
    """The chapter's ``vote_counts``: votes per decision (free-text answers grouped by the
    same rule as the tally, and named by their cluster's label)."""
    if options:
        counts: dict[str, int] = {}
        for vote in votes:
            if vote.valid:
                counts[vote.decision] = counts.get(vote.decision, 0) + 1
        return counts
    unweighted = cluster_vote([v.decision for v in votes if v.valid], same=similar)
    return {label: round(n) for label, n in unweighted.counts.items()} if result.counts else {}


def _check_ballot(voters: Sequence[Voter], options: Sequence[str] | None) -> None:
    if not voters:
        raise ConfigError("a vote needs at least one voter")
    names = [v.name for v in voters]
    if len(set(names)) != len(names):
        raise ConfigError(f"voter names must be unique, got {names}")
    if options is not None:
        if not options:
            raise ConfigError("options, when given, must name at least one choice")
        folded = [fold(o) for o in options]
        if len(set(folded)) != len(folded):
            raise ConfigError(f"options {list(options)} collide once case, '_', '-' and spaces are folded")
