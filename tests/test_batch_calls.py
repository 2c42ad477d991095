"""Planning an application's calls for a batch, and answering them from its results."""

from __future__ import annotations

import pytest

from quorum import errors
from quorum.engine.batch_calls import BatchAnswers, CallPlanner, error_of, reply_of
from quorum.engine.batches import _failed
from quorum.llm import FakeProvider
from quorum.llm.types import Request, Usage
from quorum.patterns.voting import Voter, VotingWorkflow

VOTERS = [Voter("a", "You are A."), Voter("b", "You are B.")]


def by_voter(request: Request) -> str:
    return VOTERS[int(request.metadata["sample"])].name


async def test_the_planner_keeps_every_request_and_sends_none() -> None:
    provider = FakeProvider()
    planner = CallPlanner(provider, by_voter)
    result = await VotingWorkflow(llm=planner.connection()).run(VOTERS, "yes or no?", ["yes", "no"])
    assert sorted(planner.requests) == ["a", "b"]
    assert planner.requests["b"].system == "You are B."
    assert provider.calls == []
    assert result.failed == 2  # every planned call ends at once, unsent


async def test_answers_come_from_the_journaled_results_and_count_as_votes() -> None:
    results = {
        "a": {"status": "ok", "text": "", "data": {"decision": "yes"}, "usage": {"input_tokens": 10,
              "output_tokens": 2}, "cost": 0.5, "model": "m"},
        # an answer that broke its schema keeps its text: the vote reads it as text, as online
        "b": {"status": "error", "text": "DECISION: yes", "error": {"type": "InvalidReply", "message": "bad"},
              "usage": {"input_tokens": 10, "output_tokens": 3}, "cost": 0.25},
    }  # fmt: skip
    answers = BatchAnswers(FakeProvider(), by_voter, results)
    result = await VotingWorkflow(llm=answers.connection()).run(VOTERS, "yes or no?", ["yes", "no"])
    assert result.winner == "yes"
    assert result.vote_counts == {"yes": 2}
    assert result.cost == pytest.approx(0.75)  # what the batch billed


async def test_a_request_without_a_result_fails_and_says_how_to_collect_it() -> None:
    answers = BatchAnswers(FakeProvider(), by_voter, {})
    with pytest.raises(errors.PermanentError, match="run the same command again"):
        await answers.complete(Request.of("q", metadata={"sample": "0"}))


def test_journaled_errors_keep_their_class_and_invalid_answers_their_text() -> None:
    failed = _failed(
        "x", errors.InvalidReply("broke the schema", text="yes").billed(Usage(4, 2), 0.1), "batch"
    )
    assert failed.record["text"] == "yes"
    assert failed.record["usage"] == {"input_tokens": 4, "output_tokens": 2}
    invalid = error_of(failed.record, "anthropic")
    assert isinstance(invalid, errors.InvalidReply)
    assert (invalid.text, invalid.cost) == ("yes", 0.1)
    bad = error_of({"status": "error", "error": {"type": "BadRequest", "message": "no"}}, "anthropic")
    assert isinstance(bad, errors.BadRequest)
    assert reply_of({"status": "ok", "text": "hi", "cost": 0.2}, "m").text == "hi"
