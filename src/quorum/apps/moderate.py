"""Content moderation by vote: the chapter's five moderators judge each text.

``moderate(texts, llm=...)`` streams one ``Verdict`` per text as its vote finishes (in
input order with ``ordered=True``)::

    async with moderate(comments, llm=llm, adaptive=Adaptive()) as verdicts:
        async for verdict in verdicts:
            print(verdict.id, verdict.verdict, verdict.agreement)

Through a provider batch API (half the price): ``plan_votes`` gives every moderator's
request by custom_id ``{text id}:{moderator}`` without sending any, the batch driver
answers them, and ``moderate(..., answers=results)`` counts the votes from those answers
with the same parsing and tally as online (``quorum.engine.batch_calls``). Every
moderator is asked: adaptive voting needs answers as they come, so it is refused there.

Each text's vote is a run nested inside the stream of texts, so the stream's budget,
deadline and cancellation reach every moderator's call. At most ``concurrency`` texts are
in flight; the connection's limits cap the calls themselves.

Texts are strings or ``Item``s. ``read_jsonl`` turns JSON lines into items; a line that
cannot be read becomes an item carrying the problem, which gets an error verdict naming
its line while the other lines are still judged.
"""

from __future__ import annotations

import copy
import json
from collections.abc import AsyncIterable, AsyncIterator, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

from quorum.apps.moderate_journal import ballot_fingerprint, result_from_json, result_to_json
from quorum.engine import settings
from quorum.engine.batch_calls import BatchAnswers, CallPlanner, Key, Record
from quorum.engine.budget import Budget
from quorum.engine.connection import connect
from quorum.engine.context import nest
from quorum.engine.events import EventSink
from quorum.engine.jobs import Journaled, journaled
from quorum.engine.outcome import Outcome, Summary
from quorum.engine.runner import Stream, stream
from quorum.errors import ConfigError, MalformedInput
from quorum.llm.provider import Provider
from quorum.llm.secrets import redact
from quorum.llm.types import Request
from quorum.patterns.adaptive import Adaptive
from quorum.patterns.normalize import fold
from quorum.patterns.voting import Voter, VotingResult, VotingWorkflow

# The chapter's moderators: same names, perspectives and temperatures.
MODERATORS: tuple[Voter, ...] = (
    Voter(
        "strict_moderator",
        "You are a strict content moderator. You err on the side of caution and flag anything "
        "that could potentially be problematic.",
        temperature=0.3,
    ),
    Voter(
        "balanced_moderator",
        "You are a balanced content moderator. You carefully weigh context and intent when making decisions.",
        temperature=0.5,
    ),
    Voter(
        "lenient_moderator",
        "You are a lenient content moderator. You focus on clear violations and give benefit of the "
        "doubt for ambiguous content.",
        temperature=0.3,
    ),
    Voter(
        "context_analyst",
        "You analyze content with deep attention to context. Consider the full picture before making "
        "a judgment.",
        temperature=0.7,
    ),
    Voter(
        "policy_expert",
        "You are an expert in content policies. You apply rules consistently and fairly.",
        temperature=0.3,
    ),
)
OPTIONS: tuple[str, ...] = ("acceptable", "needs_review", "rejected")
THRESHOLD = 0.6
VOTES_LABEL = "votes"  # the label of every text's nested vote, so its events can be told apart

ItemId = str | int


@dataclass(frozen=True, slots=True)
class Item:
    """One text to judge. ``line`` is the input line it came from, if any; ``problem``
    says why that line could not be read (the item then gets an error verdict, no call)."""

    id: ItemId
    text: str = ""
    line: int | None = None
    problem: str | None = None


@dataclass
class Verdict:
    """One text's verdict. ``status`` is ``ok``, or ``error`` (unreadable input, a vote
    that could not run, every moderator failing), ``timeout``, ``cancelled`` or ``skipped``
    (the run stopped first, e.g. on its budget); ``error`` then says why. ``verdict`` is the
    winning option, ``None`` on a tie or without valid votes; ``decisions`` is each
    moderator's decision (``UNKNOWN`` when it named no option, ``ERROR`` when its call
    failed, with the reason in ``vote_errors``); with adaptive voting, only the votes
    counted before ``stopped_early`` are there. ``votes_used`` counts the moderators
    asked, including calls cancelled once the vote was settled."""

    id: ItemId
    index: int
    status: str
    verdict: str | None = None
    consensus: bool = False
    agreement: float = 0.0
    vote_counts: dict[str, int] = field(default_factory=dict)
    tied: list[str] = field(default_factory=list)
    invalid: int = 0
    failed: int = 0
    votes_used: int = 0
    stopped_early: str | None = None
    decisions: dict[str, str] = field(default_factory=dict)
    vote_errors: dict[str, str] = field(default_factory=dict)
    line: int | None = None
    error: str | None = None
    result: VotingResult | None = field(default=None, repr=False, compare=False)

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def to_dict(self) -> dict[str, Any]:
        """The verdict as one JSON object (the vote's full detail left out)."""
        return {
            "id": self.id,
            "index": self.index,
            "line": self.line,
            "status": self.status,
            "verdict": self.verdict,
            "consensus": self.consensus,
            "agreement": round(self.agreement, 4),
            "vote_counts": self.vote_counts,
            "tied": self.tied,
            "invalid": self.invalid,
            "failed": self.failed,
            "votes_used": self.votes_used,
            "stopped_early": self.stopped_early,
            "decisions": self.decisions,
            # A base URL in an error can carry credentials: errors are shown redacted.
            "vote_errors": {name: redact(why) for name, why in self.vote_errors.items()},
            "error": redact(self.error) if self.error else None,
        }


def moderation_prompt(text: str, options: Sequence[str]) -> str:
    """The chapter's question; with other options, the same question naming them."""
    if tuple(options) == OPTIONS:
        question = "Is this content acceptable, needs_review, or should be rejected?"
    else:
        question = f"Which of these fits it: {', '.join(options)}?"
    return f"Classify the following user content:\n\n{text}\n\n{question}"


def moderate(
    texts: Iterable[str | Item] | AsyncIterable[str | Item],
    *,
    llm: Provider | str | None = None,
    voters: Sequence[Voter] = MODERATORS,
    options: Sequence[str] = OPTIONS,
    threshold: float = THRESHOLD,
    adaptive: Adaptive | None = None,
    ordered: bool = False,
    concurrency: int | None = None,
    budget: Budget | None = None,
    on_event: EventSink | None = None,
    journal: str | Path | None = None,
    restart: bool = False,
    answers: Mapping[str, Record] | None = None,
) -> Moderation:
    """Judge every text by a vote of ``voters`` among ``options``; see ``Moderation``.

    ``llm``: a provider, connection or model string (``None``: the default model).
    ``threshold``: the winner's share of valid votes needed for ``consensus``.
    ``adaptive``: stop each vote early once its winner is settled. ``concurrency`` (texts
    in flight), ``budget`` and ``on_event`` default to the run settings in force
    (``quorum.engine.settings.use``). ``journal``: a file that records each finished
    verdict, so running again judges only the rest (``restart=True`` forgets it).
    ``answers``: batch results by custom_id (see ``plan_votes``); the votes are counted
    from them and no call is made. The ballot is checked here, before any call."""
    if isinstance(texts, str):
        raise ConfigError("texts is one string; pass a list of texts, e.g. moderate([text], ...)")
    check_ballot(voters, options)
    if answers is not None and adaptive is not None:
        raise ConfigError(NO_ADAPTIVE_BATCHES)
    workflow = _voting(connect(llm), threshold, adaptive)
    chosen = settings.current()
    return Moderation(
        workflow,
        voters,
        options,
        texts,
        ordered=ordered,
        concurrency=concurrency or chosen.concurrency,
        budget=budget or chosen.budget,
        on_event=on_event or chosen.on_event,
        journal=journal,
        restart=restart,
        answers=answers,
    )


def _voting(llm: Provider, threshold: float, adaptive: Adaptive | None) -> VotingWorkflow:
    """The vote of every text (one place, so a batch plans the requests the votes make)."""
    return VotingWorkflow(llm=llm, consensus_threshold=threshold, adaptive=adaptive)


NO_ADAPTIVE_BATCHES = (
    "adaptive voting stops a vote once its winner is settled, which needs the answers as they "
    "come; a batch asks every moderator at once: drop --adaptive to use the batch API"
)


def vote_id(item: Item, voter: Voter) -> str:
    """The custom_id of one moderator's vote on one text in a batch."""
    return f"{item.id}:{voter.name}"


def _vote_key(item: Item, voters: Sequence[Voter]) -> Key:
    # VotingWorkflow numbers each voter's request in its metadata ("sample")
    return lambda request: vote_id(item, voters[int(request.metadata["sample"])])


async def plan_votes(
    items: Iterable[Item],
    *,
    llm: Provider,
    voters: Sequence[Voter] = MODERATORS,
    options: Sequence[str] = OPTIONS,
) -> dict[str, Request]:
    """Every request the votes on ``items`` make, by ``vote_id``, built as online (same
    prompts, structured output and cache prefix for ``llm``'s model); nothing is sent.
    Items that could not be read make no request."""
    check_ballot(voters, options)
    planned: dict[str, Request] = {}
    for item in items:
        if item.problem is not None:
            continue
        planner = CallPlanner(llm, _vote_key(item, voters))
        workflow = _voting(planner.connection(), THRESHOLD, None)
        await workflow.run(voters, moderation_prompt(item.text, options), options)
        planned.update(planner.requests)
    return planned


class Moderation:
    """Verdicts as their votes finish. Iterate inside ``async with`` so that leaving the
    block early cancels the votes still running; ``summary`` (texts by status, usage,
    cost, wall time) is complete once the iteration has ended."""

    def __init__(
        self,
        workflow: VotingWorkflow,
        voters: Sequence[Voter],
        options: Sequence[str],
        texts: Iterable[str | Item] | AsyncIterable[str | Item],
        *,
        ordered: bool = False,
        concurrency: int | None = None,
        budget: Budget | None = None,
        on_event: EventSink | None = None,
        journal: str | Path | None = None,
        restart: bool = False,
        answers: Mapping[str, Record] | None = None,
    ) -> None:
        self._workflow = workflow
        self._answers = answers
        self._voters = list(voters)
        self._options = list(options)
        # Items pulled but not yet reported, by input position: an outcome that failed or
        # was skipped carries no value, and its verdict still needs the item's id and line.
        self._pending: dict[int, Item] = {}
        self._stream: Stream[Item, VotingResult] | Journaled[Item, VotingResult]
        if journal is None:
            self._stream = stream(
                self._judge,
                self._items(texts),
                ids=_item_id,
                ordered=ordered,
                concurrency=concurrency,
                budget=budget,
                on_event=on_event,
            )
        else:  # durable jobs: finished texts are not judged again
            threshold = workflow.consensus_threshold
            self._stream = journaled(
                self._judge,
                self._items(texts),
                journal,
                ids=_item_id,
                fingerprint=lambda item: ballot_fingerprint(item.text, voters, options, threshold),
                encode=result_to_json,
                decode=result_from_json,
                restart=restart,
                ordered=ordered,
                concurrency=concurrency,
                budget=budget,
                on_event=on_event,
            )

    @property
    def summary(self) -> Summary:
        return self._stream.summary

    async def __aenter__(self) -> Moderation:
        await self._stream.__aenter__()
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self._stream.aclose()

    def __aiter__(self) -> AsyncIterator[Verdict]:
        return self

    async def __anext__(self) -> Verdict:
        outcome = await self._stream.__anext__()
        return verdict_of(self._pending.pop(outcome.index), outcome)

    async def _items(self, texts: Iterable[str | Item] | AsyncIterable[str | Item]) -> AsyncIterator[Item]:
        position = 0
        if isinstance(texts, AsyncIterable):
            async for text in texts:
                yield self._remember(position, text)
                position += 1
        else:
            for text in texts:
                yield self._remember(position, text)
                position += 1

    def _remember(self, position: int, text: str | Item) -> Item:
        item = text if isinstance(text, Item) else Item(position + 1, text)
        self._pending[position] = item
        return item

    async def _judge(self, item: Item) -> VotingResult:
        if item.problem is not None:
            raise MalformedInput(item.problem)
        with nest(VOTES_LABEL):
            prompt = moderation_prompt(item.text, self._options)
            return await self._workflow_for(item).run(self._voters, prompt, self._options)

    def _workflow_for(self, item: Item) -> VotingWorkflow:
        """The workflow, or with batch ``answers`` a copy that counts the text's votes from them."""
        if self._answers is None:
            return self._workflow
        replay = copy.copy(self._workflow)
        key = _vote_key(item, self._voters)
        replay.llm = BatchAnswers(self._workflow.llm, key, self._answers).connection()
        return replay


def _item_id(_index: int, item: Item) -> str:
    return str(item.id)


def verdict_of(item: Item, outcome: Outcome[VotingResult]) -> Verdict:
    """The verdict for ``item`` from how its vote ended."""
    base = Verdict(id=item.id, index=outcome.index, status=str(outcome.status), line=item.line)
    result = outcome.value
    if not outcome.ok or result is None:
        base.error = item.problem or outcome.error_message
        return base
    base.verdict, base.consensus, base.agreement = result.winner, result.consensus, result.agreement
    base.vote_counts, base.tied = result.vote_counts, result.tied
    base.invalid, base.failed, base.votes_used = result.invalid, result.failed, result.votes_used
    base.stopped_early = result.stopped_early
    base.decisions = {v.voter_name: v.decision for v in result.votes}
    base.vote_errors = {v.voter_name: v.error for v in result.votes if v.error}
    base.result = result
    if result.votes and result.failed == len(result.votes):
        base.status = "error"
        base.error = f"every moderator's call failed; first: {result.votes[0].error}"
    return base


def check_ballot(voters: Sequence[Voter], options: Sequence[str]) -> None:
    """Fail before any call on a ballot that cannot produce a verdict."""
    if not voters:
        raise ConfigError("moderation needs at least one voter")
    if len(options) < 2 or not all(o.strip() for o in options):
        raise ConfigError(
            f"moderation needs at least two non-empty options to choose from, got {list(options)}; "
            "e.g. acceptable,needs_review,rejected"
        )
    folded = [fold(o) for o in options]
    if len(set(folded)) != len(folded):
        raise ConfigError(
            f"options {list(options)} repeat once case, '_', '-' and spaces are ignored; "
            "give each choice once"
        )


# -- reading input ----------------------------------------------------------------------


def read_jsonl(lines: Iterable[str]) -> Iterator[Item]:
    """Items from JSON lines (blank lines skipped, line numbers from 1)."""
    for number, raw in enumerate(lines, start=1):
        item = item_from_json(raw, number)
        if item is not None:
            yield item


def item_from_json(raw: str, number: int) -> Item | None:
    """One JSON line as an item: ``{"id": ..., "text": "..."}`` (``id`` defaults to the
    line number) or a bare JSON string. ``None`` for a blank line; an item with a
    ``problem`` for a line that is neither."""
    if not raw.strip():
        return None
    try:
        value = json.loads(raw)
    except json.JSONDecodeError as exc:
        # Some of json's messages end in "at" already ("Invalid control character at").
        return unreadable(number, f"not valid JSON ({exc.msg.removesuffix(' at')} at column {exc.colno})")
    if isinstance(value, str):
        return Item(number, value, number) if value.strip() else unreadable(number, "an empty text")
    if not isinstance(value, dict):
        return unreadable(number, f"a JSON {_JSON_KIND.get(type(value), 'value')}; {_EXPECTED}")
    text, ident = value.get("text"), value.get("id", number)
    if not isinstance(text, str) or not text.strip():
        return unreadable(number, f'no non-empty "text" string; {_EXPECTED}')
    if not isinstance(ident, (str, int)) or isinstance(ident, bool):
        return unreadable(number, f'an "id" that is neither a string nor an integer: {ident!r}')
    return Item(ident, text, number)


def item_from_line(raw: str, number: int) -> Item | None:
    """One line of plain text as an item (``None`` for a blank line)."""
    text = raw.rstrip("\r\n")
    return Item(number, text, number) if text.strip() else None


_EXPECTED = 'expected {"id": ..., "text": "..."} or a JSON string'
_JSON_KIND = {list: "list", int: "number", float: "number", bool: "boolean", type(None): "null"}


def unreadable(number: int, problem: str) -> Item:
    """The item for input line ``number`` that could not be read, and why."""
    return Item(number, line=number, problem=problem)
