"""Failure policies are objects whose hooks return decisions; the runner acts on them.

The hooks are tested directly here (no run needed: a policy never touches a run), and
the run settings carrier (``settings.use`` under ``run``/``stream``/``nest``) after them.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from quorum import errors
from quorum.engine import Budget, Event, FailurePolicy, Outcome, Quorum, Status, connect, nest, run, settings
from quorum.engine.policy import CONTINUE, Action, Decision, Tally, rules_of
from quorum.engine.retry import CHAPTER_RETRY, worth_rerunning
from quorum.llm import FakeProvider, Request


def outcome(index: int, status: Status, error: BaseException | None = None) -> Outcome[Any]:
    return Outcome(index, f"t{index}", status, error=error)


def feed(policy: Any, outcomes: list[Outcome[Any]]) -> tuple[list[Decision], Tally]:
    """Count each outcome and ask the policy, as the runner does."""
    rules, tally, decisions = rules_of(policy), Tally(), []
    for each in outcomes:
        tally.count(each, keep=rules.keeps_failures(tally))
        decisions.append(rules.decide(each, tally))
    return decisions, tally


OK, ERROR, SKIPPED = Status.OK, Status.ERROR, Status.SKIPPED


def test_ignore_never_stops_and_never_raises() -> None:
    decisions, tally = feed(FailurePolicy.IGNORE, [outcome(0, ERROR, ValueError("x")), outcome(1, OK)])
    assert decisions == [CONTINUE, CONTINUE]
    assert FailurePolicy.IGNORE.rules.verdict(tally, None) is None
    assert tally.failures == []  # nothing kept: a long failing run holds no list


def test_fail_fast_cancels_on_the_first_failure_only_and_raises_it_at_the_end() -> None:
    first = ValueError("first")
    decisions, tally = feed(
        FailurePolicy.FAIL_FAST,
        [outcome(0, OK), outcome(1, Status.TIMEOUT, errors.Timeout("late")), outcome(2, ERROR, first)],
    )
    assert [d.action for d in decisions] == [Action.CONTINUE, Action.CANCEL, Action.CONTINUE]
    assert "t1" in decisions[1].reason
    error = FailurePolicy.FAIL_FAST.rules.verdict(tally, "the result")
    assert isinstance(error, errors.RunAborted)
    assert isinstance(error.__cause__, errors.Timeout)
    assert error.result == "the result"


def test_require_all_lists_every_failure() -> None:
    decisions, tally = feed(
        FailurePolicy.REQUIRE_ALL, [outcome(0, ERROR, ValueError("a")), outcome(1, ERROR, KeyError("b"))]
    )
    assert decisions == [CONTINUE, CONTINUE]
    error = FailurePolicy.REQUIRE_ALL.rules.verdict(tally, None)
    assert isinstance(error, errors.IncompleteRun)
    assert "t0: ValueError: a" in str(error)
    assert "t1: KeyError: 'b'" in str(error)


def test_require_all_counts_skipped_work_as_not_done() -> None:
    _, tally = feed(FailurePolicy.REQUIRE_ALL, [outcome(0, OK), outcome(1, SKIPPED)])
    tally.stopped = "token budget 10 reached (spent 12)"
    error = FailurePolicy.REQUIRE_ALL.rules.verdict(tally, None)
    assert isinstance(error, errors.IncompleteRun)
    assert "1 tasks were skipped: token budget" in str(error)
    _, done = feed(FailurePolicy.REQUIRE_ALL, [outcome(0, OK)])
    assert FailurePolicy.REQUIRE_ALL.rules.verdict(done, None) is None


def test_quorum_cancels_once_k_succeeded_and_quotes_a_few_failures() -> None:
    failures = [outcome(i, ERROR, ValueError(str(i))) for i in range(15)]
    decisions, tally = feed(Quorum(2), [*failures, outcome(15, OK), outcome(16, OK), outcome(17, OK)])
    assert [d.action for d in decisions[-3:]] == [Action.CONTINUE, Action.CANCEL, Action.CONTINUE]
    assert decisions[-2].reason == "quorum of 2 reached"
    assert Quorum(2).verdict(tally, None) is None
    assert len(tally.failures) == 10
    _, short = feed(Quorum(3), [outcome(0, OK), outcome(1, ERROR, ValueError("no"))])
    error = Quorum(3).verdict(short, None)
    assert isinstance(error, errors.QuorumNotReached)
    assert "only 1 of the 3" in str(error)


def test_cancelled_and_skipped_outcomes_are_not_failures() -> None:
    _, tally = feed(FailurePolicy.FAIL_FAST, [outcome(0, Status.CANCELLED), outcome(1, SKIPPED)])
    assert (tally.failed, tally.first_failure) == (0, None)


def test_retry_is_the_chapter_schedule_for_what_re_running_may_fix() -> None:
    assert FailurePolicy.RETRY.rules.retry is CHAPTER_RETRY
    assert CHAPTER_RETRY.retry_on is worth_rerunning
    assert [CHAPTER_RETRY.backoff(n) for n in (1, 2)] == [1.0, 2.0]
    assert all(p.rules.retry is None for p in FailurePolicy if p is not FailurePolicy.RETRY)


@pytest.mark.parametrize("k", [0, -1, 1.5, True])
def test_quorum_needs_a_whole_positive_k(k: Any) -> None:
    with pytest.raises(errors.ConfigError):
        Quorum(k)


# -- the settings carrier ---------------------------------------------------------------------


def request(text: str) -> Request:
    return Request.of(text, max_tokens=16)


async def test_runs_read_the_settings_in_force_and_their_own_keywords_win() -> None:
    fake = FakeProvider(responder=lambda r: "answer", latency=0.002)
    llm = connect(fake)

    async def fn(i: int) -> str:
        return (await llm.complete(request(str(i)))).text

    with settings.use(concurrency=2):
        await run(fn, range(8))
        assert fake.max_in_flight == 2
        fake.max_in_flight = 0
        await run(fn, range(8), concurrency=3)
        assert fake.max_in_flight == 3


async def test_a_timeout_in_the_settings_bounds_each_task() -> None:
    async def fn(i: int) -> int:
        await asyncio.sleep(30 if i else 0)
        return i

    with settings.use(timeout=0.02):
        result = await run(fn, range(2))
    assert [o.status for o in result.outcomes] == [Status.OK, Status.TIMEOUT]


async def test_a_budget_in_the_settings_is_charged_once_by_nested_runs() -> None:
    llm = connect(FakeProvider(responder=lambda r: "answer"))
    budget = Budget(tokens=10_000)

    async def inner(text: str) -> str:
        return (await llm.complete(request(text))).text

    async def outer(section: int) -> int:
        return len((await run(inner, [f"s{section}v{v}" for v in range(3)])).values)

    with settings.use(budget=budget):
        result = await run(outer, range(2))
    assert result.values == [3, 3]
    assert budget.spent_tokens == result.summary.usage.total_tokens == 6 * 3


async def test_event_sinks_nearest_first_run_then_nest_then_settings() -> None:
    by_sink: dict[str, set[str]] = {"settings": set(), "nest": set(), "own": set()}

    def sink(name: str) -> Any:
        return lambda event: by_sink[name].add(event.run)

    async def fn(i: int) -> int:
        return i

    with settings.use(on_event=sink("settings")):
        await run(fn, [0], label="top")
        with nest("nested", on_event=sink("nest")):
            await run(fn, [0], label="inner")
            await run(fn, [0], label="own", on_event=sink("own"))
    assert by_sink == {"settings": {"top"}, "nest": {"nested/inner"}, "own": {"nested/own"}}


async def test_nest_and_settings_budgets_both_apply() -> None:
    llm = connect(FakeProvider(responder=lambda r: "answer"))
    wide, narrow = Budget(tokens=1000), Budget(tokens=100)

    async def fn(text: str) -> str:
        return (await llm.complete(request(text))).text

    with settings.use(budget=wide), nest(budget=narrow):
        await run(fn, ["a", "b"])
    assert wide.spent_tokens == narrow.spent_tokens > 0


async def test_a_run_inside_a_task_ends_when_the_task_must() -> None:
    inner_runs: list[asyncio.Future[Any]] = []

    async def slow(i: int) -> int:
        await asyncio.sleep(30)
        return i

    async def outer(_: int) -> int:
        inner = asyncio.ensure_future(run(slow, range(2)))  # no limit of its own
        inner_runs.append(inner)
        return len((await asyncio.shield(inner)).values)  # only the inherited end can stop it

    result = await run(outer, [0], timeout=0.5)  # room for both inner tasks to start
    assert result.outcomes[0].status is Status.TIMEOUT
    inner_result = await asyncio.wait_for(inner_runs[0], 5)
    assert [o.status for o in inner_result.outcomes] == [Status.TIMEOUT, Status.TIMEOUT]


async def test_events_are_events() -> None:
    seen: list[Event] = []

    async def fn(i: int) -> int:
        return i

    await run(fn, [0], on_event=seen.append)
    assert [e.kind.value for e in seen] == ["queued", "started", "finished"]
