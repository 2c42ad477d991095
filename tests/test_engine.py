"""The engine: policies, outcomes, time limits, budgets, order, laziness and cancellation.

Logic is tested against the fake provider and plain coroutines. Timing that matters is
read from a ``VirtualClock``; the few real sleeps are a few milliseconds long and no
assertion depends on how long anything took.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from quorum import errors
from quorum.engine import (
    Budget,
    EventKind,
    FailurePolicy,
    Outcome,
    Quorum,
    Retry,
    RunResult,
    Status,
    connect,
    run,
    stream,
)
from quorum.llm import FakeProvider, Price, Request, load_rules
from quorum.llm.types import Usage
from quorum.testing.clock import VirtualClock

PRICE = Price(input=3.0, output=15.0, cache_read=0.3, cache_write=3.75)
LONG = 30.0  # a latency no test ever waits for: such calls are always cancelled


def slow_fake(**kw: Any) -> FakeProvider:
    """Calls whose prompt says "fail" fail fast with a permanent error; the rest hang."""
    rules = load_rules([{"match": "fail", "error": "bad_request", "latency": 0.005}])
    return FakeProvider(rules=rules, latency=LONG, **kw)


def request(text: str) -> Request:
    return Request.of(text, max_tokens=16)


def leftover_tasks(before: set[asyncio.Task[Any]]) -> list[asyncio.Task[Any]]:
    """Tasks created since ``before`` that are still running (this test's own excluded)."""
    me = asyncio.current_task()
    return [t for t in asyncio.all_tasks() - before if t is not me and not t.done()]


class Gate:
    """A fake's responder that opens once ``n`` calls have started."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.started = 0
        self.opened = asyncio.Event()

    def __call__(self, request: Request) -> str:
        self.started += 1
        if self.started >= self.n:
            self.opened.set()
        return "answer"


# -- policies --------------------------------------------------------------------------------


async def test_ignore_runs_everything_and_keeps_failures_as_data() -> None:
    async def fn(i: int) -> int:
        if i % 3 == 0:
            raise ValueError(f"bad item {i}")
        return i * 10

    result = await run(fn, range(9), concurrency=4)
    assert [o.status for o in result.outcomes] == [
        Status.ERROR if i % 3 == 0 else Status.OK for i in range(9)
    ]
    assert result.values == [10, 20, 40, 50, 70, 80]
    failure = result.outcomes[3]
    assert isinstance(failure.error, ValueError)
    assert failure.error_message == "ValueError: bad item 3"
    assert failure.value is None
    assert result.summary.count(Status.OK) == 6
    assert result.summary.count(Status.ERROR) == 3
    assert result.summary.stopped is None


async def test_fail_fast_cancels_calls_in_flight_and_skips_the_rest() -> None:
    fake = slow_fake()
    llm = connect(fake)

    async def fn(text: str) -> str:
        return (await llm.complete(request(text))).text

    items = ["wait a", "wait b", "fail c", "wait d"] + [f"wait {i}" for i in range(6)]
    with pytest.raises(errors.RunAborted) as caught:
        await run(fn, items, concurrency=4, policy=FailurePolicy.FAIL_FAST)

    abort = caught.value
    assert isinstance(abort.__cause__, errors.BadRequest)
    assert "task_2" in str(abort)
    result: RunResult[str] = abort.result
    statuses = [o.status for o in result.outcomes]
    assert statuses == [Status.CANCELLED] * 2 + [Status.ERROR, Status.CANCELLED] + [Status.SKIPPED] * 6
    assert fake.cancelled == 3  # the three calls in flight were really cancelled
    assert fake.in_flight == 0
    assert len(fake.calls) == 4  # nothing after the failure was sent
    assert result.summary.stopped is not None
    assert "FAIL_FAST" in result.summary.stopped
    assert all(o.error_message for o in result.outcomes if not o.ok)


async def test_fail_fast_with_no_failure_returns_normally() -> None:
    async def fn(i: int) -> int:
        return i

    result = await run(fn, range(5), policy=FailurePolicy.FAIL_FAST)
    assert result.values == [0, 1, 2, 3, 4]


async def test_fail_fast_treats_a_timeout_as_a_failure() -> None:
    async def fn(i: int) -> int:
        await asyncio.sleep(LONG if i == 0 else 0)
        return i

    with pytest.raises(errors.RunAborted) as caught:
        await run(fn, range(3), concurrency=1, timeout=0.005, policy=FailurePolicy.FAIL_FAST)
    outcomes = caught.value.result.outcomes
    assert [o.status for o in outcomes] == [Status.TIMEOUT, Status.SKIPPED, Status.SKIPPED]
    assert isinstance(caught.value.__cause__, errors.Timeout)


async def test_retry_policy_retries_failed_tasks_with_the_chapter_backoff() -> None:
    clock = VirtualClock()
    tries: dict[int, int] = {}

    async def fn(i: int) -> int:
        tries[i] = tries.get(i, 0) + 1
        if tries[i] < 3:
            raise ConnectionError(f"flaky {i}")
        return i

    result = await run(fn, range(2), concurrency=1, policy=FailurePolicy.RETRY, clock=clock)
    assert result.values == [0, 1]
    assert [o.attempts for o in result.outcomes] == [3, 3]
    assert clock.slept == [1.0, 2.0, 1.0, 2.0]  # the chapter's schedule, defined once
    assert result.summary.retries == 4


async def test_retry_policy_does_not_retry_permanent_errors() -> None:
    clock = VirtualClock()
    calls = 0

    async def fn(_: int) -> int:
        nonlocal calls
        calls += 1
        raise errors.AuthError("bad key", status=401)

    result = await run(fn, [0], policy=FailurePolicy.RETRY, clock=clock)
    assert calls == 1
    assert result.outcomes[0].attempts == 1
    assert clock.slept == []


async def test_retry_policy_gives_up_after_its_attempts() -> None:
    clock = VirtualClock()

    async def fn(_: int) -> int:
        raise RuntimeError("always")

    retry = Retry(attempts=3, base_delay=1.0, jitter=0.0, retry_on=lambda e: True)
    result = await run(fn, [0], retry=retry, clock=clock)
    outcome = result.outcomes[0]
    assert outcome.status is Status.ERROR
    assert outcome.attempts == 3
    assert clock.slept == [1.0, 2.0]
    assert outcome.error_message == "RuntimeError: always"


async def test_require_all_runs_everything_then_lists_every_failure() -> None:
    ran: list[int] = []

    async def fn(i: int) -> int:
        ran.append(i)
        if i in (1, 4):
            raise ValueError(f"no {i}")
        return i

    with pytest.raises(errors.IncompleteRun) as caught:
        await run(fn, range(6), concurrency=2, policy=FailurePolicy.REQUIRE_ALL)
    assert sorted(ran) == list(range(6))
    message = str(caught.value)
    assert "2 tasks failed" in message
    assert "task_1: ValueError: no 1" in message
    assert "task_4: ValueError: no 4" in message
    assert caught.value.result.values == [0, 2, 3, 5]


async def test_quorum_stops_once_k_succeeded_and_cancels_the_rest() -> None:
    rules = [
        {"match": "quick", "reply": "yes", "latency": 0.002},
        {"match": "later", "reply": "yes", "latency": 0.02},
    ]
    fake = FakeProvider(rules=load_rules(rules), latency=LONG)
    llm = connect(fake)

    async def fn(text: str) -> str:
        return (await llm.complete(request(text))).text

    # "quick 1" frees its worker for "slow 4"; "later 2" completes the quorum
    items = ["slow 0", "quick 1", "later 2", "slow 3", "slow 4", "slow 5", "slow 6"]
    result = await run(fn, items, concurrency=4, policy=Quorum(2))
    statuses = [o.status for o in result.outcomes]
    cancelled, ok, skipped = Status.CANCELLED, Status.OK, Status.SKIPPED
    assert statuses == [cancelled, ok, ok, cancelled, cancelled, skipped, skipped]
    assert fake.cancelled == 3
    assert len(fake.calls) == 5
    assert result.values == ["yes", "yes"]
    assert result.summary.stopped == "quorum of 2 reached"


async def test_quorum_not_reached_raises_with_every_outcome() -> None:
    async def fn(i: int) -> int:
        if i != 2:
            raise ValueError(f"nope {i}")
        return i

    with pytest.raises(errors.QuorumNotReached) as caught:
        await run(fn, range(4), policy=FailurePolicy.quorum(2))
    assert "only 1 of the 2" in str(caught.value)
    assert len(caught.value.result.outcomes) == 4
    assert caught.value.result.values == [2]


def test_quorum_needs_a_positive_k() -> None:
    with pytest.raises(errors.ConfigError):
        Quorum(0)


async def test_stream_raises_the_policy_error_at_the_end() -> None:
    async def fn(i: int) -> int:
        if i == 1:
            raise ValueError("x")
        return i

    seen: list[Outcome[int]] = []

    async def consume() -> None:
        async with stream(fn, range(3), policy=FailurePolicy.REQUIRE_ALL) as outcomes:
            async for outcome in outcomes:
                seen.append(outcome)

    with pytest.raises(errors.IncompleteRun) as caught:
        await consume()
    assert sorted(o.index for o in seen) == [0, 1, 2]
    result = caught.value.result
    assert isinstance(result, RunResult)  # the same type as run's, its outcomes were yielded
    assert result.summary.count(Status.ERROR) == 1


async def test_stream_with_fail_fast_yields_what_ended_then_raises() -> None:
    gate = Gate(3)
    fake = FakeProvider(responder=gate, latency=LONG)
    llm = connect(fake)

    async def fn(i: int) -> str:
        if i == 3:
            await gate.opened.wait()
            raise ValueError("three")
        return (await llm.complete(request(str(i)))).text

    seen: list[Outcome[str]] = []

    async def consume() -> None:
        async with stream(fn, range(8), concurrency=4, policy=FailurePolicy.FAIL_FAST) as outcomes:
            async for outcome in outcomes:
                seen.append(outcome)

    with pytest.raises(errors.RunAborted) as caught:
        await consume()
    assert isinstance(caught.value.__cause__, ValueError)
    assert sorted(o.index for o in seen) == list(range(8))  # every outcome was yielded first
    assert seen[0].status is Status.ERROR  # the failure ended first
    assert fake.cancelled == 3


async def test_stream_with_a_quorum_ends_without_error() -> None:
    async def fn(i: int) -> int:
        await asyncio.sleep(0)
        return i

    async with stream(fn, itertools.count(), concurrency=3, policy=Quorum(4)) as outcomes:
        ok = [o.value async for o in outcomes if o.ok]
    assert len(ok) == 4


async def test_a_stream_iterated_to_the_end_without_async_with_leaves_nothing_running() -> None:
    before = asyncio.all_tasks()

    async def fn(i: int) -> int:
        await asyncio.sleep(0)
        return i

    values = [o.value async for o in stream(fn, range(20), concurrency=4)]
    assert sorted(values) == list(range(20))  # type: ignore[type-var]
    assert leftover_tasks(before) == []


# -- outcomes and the summary ----------------------------------------------------------------


async def test_outcome_carries_usage_cost_and_calls_made_inside_the_task() -> None:
    fake = FakeProvider(responder=lambda r: "four words of answer", price=PRICE)
    llm = connect(fake)

    async def fn(topic: str) -> int:
        first = await llm.complete(request(f"summarise {topic}"))
        second = await llm.complete(request(f"criticise {topic}"))
        return len(first.text) + len(second.text)

    result = await run(fn, ["tides", "the history of rope"])
    for topic, outcome in zip(["tides", "the history of rope"], result.outcomes, strict=True):
        replies = [await fake.complete(request(f"{verb} {topic}")) for verb in ("summarise", "criticise")]
        expected = replies[0].usage + replies[1].usage
        assert outcome.usage == expected
        assert outcome.calls == 2
        assert outcome.cost == pytest.approx(sum(r.cost or 0 for r in replies))
        assert outcome.attempts == 1
    total = result.outcomes[0].usage + result.outcomes[1].usage
    assert result.summary.usage == total
    assert result.summary.cost == pytest.approx(sum(o.cost or 0 for o in result.outcomes))


async def test_outcome_cost_is_unknown_when_a_call_has_no_price() -> None:
    llm = connect(FakeProvider(model="no-such-model"))

    async def fn(text: str) -> str:
        return (await llm.complete(request(text))).text

    result = await run(fn, ["a"])
    assert result.outcomes[0].calls == 1
    assert result.outcomes[0].cost is None
    assert result.summary.cost is None
    assert result.summary.unpriced == 1
    assert "cost unknown" in result.summary.line()


async def test_outcome_times_and_summary_on_a_virtual_clock() -> None:
    clock = VirtualClock(start=100.0)

    async def fn(seconds: float) -> float:
        await clock.sleep(seconds)
        return seconds

    result = await run(fn, [1.0, 1.0, 2.0, 1.0], concurrency=2, clock=clock)
    first = result.outcomes[0]
    assert (first.queued_at, first.started_at, first.finished_at) == (100.0, 100.0, 101.0)
    assert first.duration == 1.0
    # the last two start when the first two free their workers, at 101
    assert [o.started_at for o in result.outcomes] == [100.0, 100.0, 101.0, 101.0]
    assert [o.finished_at for o in result.outcomes] == [101.0, 101.0, 103.0, 102.0]
    summary = result.summary
    assert summary.busy_s == 5.0
    assert summary.wall_s == 3.0
    assert summary.time_saved_s == 2.0
    assert summary.total == 4
    assert "4 tasks (4 ok)" in summary.line()


async def test_connection_retries_count_as_attempts_of_the_task() -> None:
    clock = VirtualClock()
    fake = FakeProvider(error_rate={"server_error": 0.5}, seed=3)
    llm = connect(fake, clock=clock, retry=Retry(attempts=10, jitter=0.0))

    async def fn(i: int) -> str:
        return (await llm.complete(request(str(i)))).text

    result = await run(fn, range(20), concurrency=1, clock=clock)
    assert all(o.ok for o in result.outcomes)
    assert sum(o.attempts for o in result.outcomes) == len(fake.calls)
    assert result.summary.retries == len(fake.calls) - 20 > 0


async def test_skipped_and_cancelled_outcomes_explain_themselves() -> None:
    skipped: Outcome[int] = Outcome(0, "t", Status.SKIPPED)
    cancelled: Outcome[int] = Outcome(0, "t", Status.CANCELLED)
    assert "skipped" in (skipped.error_message or "")
    assert "cancelled" in (cancelled.error_message or "")
    with pytest.raises(RuntimeError, match="skipped"):
        skipped.unwrap()


async def test_an_exception_with_an_empty_message_still_says_what_it_was() -> None:
    async def fn(_: int) -> int:
        raise KeyError()

    outcome = (await run(fn, [0])).outcomes[0]
    assert outcome.error_message == "KeyError"
    assert outcome.error_type == "KeyError"
    with pytest.raises(KeyError):
        outcome.unwrap()


async def test_events_follow_each_task() -> None:
    seen: list[tuple[str, str, str | None]] = []

    async def fn(i: int) -> int:
        if i == 1:
            raise ValueError("x")
        return i

    await run(fn, range(2), concurrency=1, on_event=lambda e: seen.append((e.kind, e.task_id, e.status)))
    assert seen == [
        (EventKind.QUEUED, "task_0", None),
        (EventKind.STARTED, "task_0", None),
        (EventKind.FINISHED, "task_0", "ok"),
        (EventKind.QUEUED, "task_1", None),
        (EventKind.STARTED, "task_1", None),
        (EventKind.FINISHED, "task_1", "error"),
    ]


async def test_ids_name_the_tasks() -> None:
    async def fn(word: str) -> str:
        return word.upper()

    result = await run(fn, ["a", "b"], ids=lambda i, item: f"{item}-{i}")
    assert [o.id for o in result.outcomes] == ["a-0", "b-1"]


# -- time limits ---------------------------------------------------------------------------------


async def test_per_task_timeout_gives_status_timeout_and_the_others_finish() -> None:
    async def fn(i: int) -> int:
        await asyncio.sleep(LONG if i == 1 else 0)
        return i

    result = await run(fn, range(3), timeout=0.05)
    assert [o.status for o in result.outcomes] == [Status.OK, Status.TIMEOUT, Status.OK]
    late = result.outcomes[1]
    assert isinstance(late.error, errors.Timeout)
    assert "0.05s timeout" in (late.error_message or "")


async def test_a_timeout_raised_by_the_task_itself_is_an_error_not_a_timeout() -> None:
    async def fn(_: int) -> int:
        raise TimeoutError("the task's own")

    outcome = (await run(fn, [0], timeout=10)).outcomes[0]
    assert outcome.status is Status.ERROR
    assert isinstance(outcome.error, TimeoutError)


async def test_after_the_run_deadline_the_rest_are_skipped() -> None:
    async def fn(i: int) -> int:
        await asyncio.sleep(LONG if i < 2 else 0)
        return i

    # 0.5 s: both workers start before a busy machine could pass the deadline first
    result = await run(fn, range(6), concurrency=2, deadline=0.5)
    statuses = [o.status for o in result.outcomes]
    assert statuses == [Status.TIMEOUT, Status.TIMEOUT] + [Status.SKIPPED] * 4
    assert "deadline" in (result.outcomes[0].error_message or "")
    assert result.summary.stopped == "the run's deadline passed"


async def test_a_task_timeout_ends_the_task_whatever_the_retry() -> None:
    """The timeout spans the task's tries: once it expired there is no time for another."""
    tries = 0

    async def fn(_: int) -> int:
        nonlocal tries
        tries += 1
        await asyncio.sleep(LONG)
        return tries

    clock = VirtualClock()
    result = await run(fn, [0], timeout=0.05, retry=Retry(attempts=2, jitter=0.0), clock=clock)
    assert result.outcomes[0].status is Status.TIMEOUT
    assert tries == 1
    assert clock.slept == []


NAN = float("nan")


@pytest.mark.parametrize(
    "options",
    [
        {"concurrency": 0},
        {"concurrency": 1.5},
        {"concurrency": True},
        {"timeout": 0},
        {"timeout": NAN},
        {"timeout": float("inf")},
        {"deadline": -1},
        {"deadline": NAN},
        {"deadline": "10"},
        {"budget": 5},
        {"on_event": "stderr"},
        {"retry": 3},
        {"ids": "name"},
    ],
)
async def test_bad_run_options_raise_config_error(options: dict[str, Any]) -> None:
    async def fn(i: int) -> int:
        return i

    with pytest.raises(errors.ConfigError):
        await run(fn, [1], **options)
    with pytest.raises(errors.ConfigError):
        stream(fn, [1], **options)


@pytest.mark.parametrize("policy", ["fail_fast", None, 2])
async def test_a_policy_that_is_not_a_policy_raises_config_error(policy: Any) -> None:
    async def fn(i: int) -> int:
        raise ValueError("would be ignored")

    with pytest.raises(errors.ConfigError, match="FailurePolicy"):
        await run(fn, [1], policy=policy)


async def test_an_unknown_option_is_a_type_error_naming_it() -> None:
    async def fn(i: int) -> int:
        return i

    with pytest.raises(TypeError, match="concurency"):
        await run(fn, [1], concurency=3)  # type: ignore[call-arg]
    with pytest.raises(TypeError, match="max_concurrent"):
        stream(fn, [1], max_concurrent=3)  # type: ignore[call-arg]


async def test_items_that_are_not_iterable_raise_config_error() -> None:
    async def fn(i: int) -> int:
        return i

    with pytest.raises(errors.ConfigError, match="iterable"):
        await run(fn, 42)  # type: ignore[arg-type]


# -- budgets ---------------------------------------------------------------------------------


async def test_token_budget_stops_dispatch_and_skips_the_rest() -> None:
    llm = connect(FakeProvider(responder=lambda r: "answer"))
    budget = Budget(tokens=10)

    async def fn(text: str) -> str:
        return (await llm.complete(request(text))).text

    # each call uses 2 prompt tokens ("query000") + 2 answer tokens: the third passes the cap
    result = await run(fn, [f"query{i:03d}" for i in range(10)], concurrency=1, budget=budget)
    statuses = [o.status for o in result.outcomes]
    assert statuses[:3] == [Status.OK] * 3
    assert statuses[3:] == [Status.SKIPPED] * 7
    assert budget.spent_tokens == 12
    assert result.summary.stopped is not None
    assert "token budget" in result.summary.stopped


async def test_dollar_budget_stops_dispatch() -> None:
    llm = connect(FakeProvider(responder=lambda r: "x" * 400, price=PRICE))  # 100 output tokens
    budget = Budget(dollars=0.004)

    async def fn(text: str) -> str:
        return (await llm.complete(request(text))).text

    result = await run(fn, ["a", "b", "c", "d", "e"], concurrency=1, budget=budget)
    assert [o.status for o in result.outcomes] == [Status.OK] * 3 + [Status.SKIPPED] * 2
    assert budget.spent_dollars >= 0.004
    assert result.summary.stopped is not None
    assert "dollar budget" in result.summary.stopped


async def test_a_call_inside_a_task_after_the_budget_is_spent_is_refused() -> None:
    llm = connect(FakeProvider(responder=lambda r: "answer"))
    budget = Budget(tokens=1)

    async def fn(_: int) -> str:
        await llm.complete(request("first"))
        return (await llm.complete(request("second"))).text

    outcome = (await run(fn, [0], budget=budget)).outcomes[0]
    assert outcome.status is Status.ERROR
    assert isinstance(outcome.error, errors.BudgetExceeded)
    assert outcome.calls == 1


def test_negative_budgets_are_refused() -> None:
    with pytest.raises(errors.ConfigError):
        Budget(dollars=-1)
    with pytest.raises(errors.ConfigError):
        Budget(tokens=-1)


# -- order and laziness --------------------------------------------------------------------------


async def test_run_returns_outcomes_in_input_order_whatever_the_finish_order() -> None:
    clock = VirtualClock()

    async def fn(i: int) -> int:
        await clock.sleep(10 - i)
        return i

    result = await run(fn, range(10), concurrency=10, clock=clock)
    assert [o.index for o in result.outcomes] == list(range(10))
    assert result.values == list(range(10))
    finish = [o.finished_at for o in result.outcomes]
    assert finish == sorted(finish, reverse=True)


async def test_stream_yields_as_tasks_finish() -> None:
    clock = VirtualClock()

    async def fn(i: int) -> int:
        await clock.sleep(5 - i)
        return i

    async with stream(fn, range(5), concurrency=5, clock=clock) as outcomes:
        order = [o.value async for o in outcomes]
    assert order == [4, 3, 2, 1, 0]


async def test_stream_ordered_yields_in_input_order() -> None:
    clock = VirtualClock()

    async def fn(i: int) -> int:
        await clock.sleep((i * 7) % 5 + 1)
        return i

    async with stream(fn, range(12), concurrency=4, ordered=True, clock=clock) as outcomes:
        order = [o.value async for o in outcomes]
    assert order == list(range(12))


async def test_stream_pulls_lazily_at_most_a_window_ahead_of_the_consumer() -> None:
    concurrency = 3
    pulled_ahead: list[int] = []
    consumed = 0

    def items() -> Iterator[int]:
        for i in range(200):
            pulled_ahead.append(i - consumed)
            yield i

    async def fn(i: int) -> int:
        await asyncio.sleep(0)
        return i

    async with stream(fn, items(), concurrency=concurrency) as outcomes:
        async for _ in outcomes:
            consumed += 1
            await asyncio.sleep(0)
    assert consumed == 200
    assert max(pulled_ahead) <= 2 * concurrency


async def test_a_consumer_that_stops_reading_stops_the_pulling() -> None:
    pulled = 0

    def items() -> Iterator[int]:
        nonlocal pulled
        for i in itertools.count():
            pulled += 1
            yield i

    async def fn(i: int) -> int:
        return i

    async with stream(fn, items(), concurrency=4) as outcomes:
        await anext(outcomes)
        for _ in range(50):
            await asyncio.sleep(0)  # plenty of chances to run ahead
        assert pulled <= 1 + 2 * 4


async def test_run_over_a_generator_pulls_lazily_too() -> None:
    in_memory = 0
    most = 0

    def items() -> Iterator[int]:
        nonlocal in_memory, most
        for i in range(500):
            in_memory += 1
            most = max(most, in_memory)
            yield i

    async def fn(i: int) -> int:
        nonlocal in_memory
        await asyncio.sleep(0)
        in_memory -= 1
        return i

    result = await run(fn, items(), concurrency=5)
    assert len(result.outcomes) == 500
    assert most <= 5 * 4 + 1


async def test_infinite_generator_stops_at_a_quorum() -> None:
    async def fn(i: int) -> int:
        await asyncio.sleep(0)
        if i % 2:
            raise ValueError("odd")
        return i

    result = await asyncio.wait_for(run(fn, itertools.count(), concurrency=4, policy=Quorum(5)), 10)
    assert len(result.values) == 5
    assert result.summary.stopped == "quorum of 5 reached"
    assert len(result.outcomes) < 40


async def test_infinite_generator_stops_at_a_budget() -> None:
    llm = connect(FakeProvider(responder=lambda r: "answer"))

    async def fn(i: int) -> str:
        return (await llm.complete(request(f"query{i:03d}"))).text  # 4 tokens a call

    prompts = itertools.count()
    result = await asyncio.wait_for(run(fn, prompts, concurrency=2, budget=Budget(tokens=40)), 10)
    assert result.summary.count(Status.OK) == 10
    assert len(result.outcomes) < 20


async def test_infinite_async_generator_stops_at_fail_fast() -> None:
    async def items() -> AsyncIterator[int]:
        for i in itertools.count():
            yield i

    async def fn(i: int) -> int:
        if i == 7:
            raise ValueError("seven")
        await asyncio.sleep(0)
        return i

    with pytest.raises(errors.RunAborted) as caught:
        await asyncio.wait_for(run(fn, items(), concurrency=3, policy=FailurePolicy.FAIL_FAST), 10)
    assert len(caught.value.result.outcomes) < 30


async def test_a_list_is_fully_accounted_for_after_a_stop() -> None:
    async def fn(i: int) -> int:
        return i

    result = await run(fn, list(range(50)), concurrency=2, policy=Quorum(3))
    assert len(result.outcomes) == 50
    assert result.summary.count(Status.SKIPPED) + result.summary.count(Status.OK) == 50


async def test_items_that_are_none_are_items() -> None:
    async def fn(item: None) -> str:
        return repr(item)

    result = await run(fn, [None, None, None])
    assert result.values == ["None", "None", "None"]


async def test_async_iterables_work() -> None:
    async def items() -> AsyncIterator[str]:
        for word in ("a", "b", "c"):
            await asyncio.sleep(0)
            yield word

    async def fn(word: str) -> str:
        return word * 2

    result = await run(fn, items(), concurrency=2)
    assert result.values == ["aa", "bb", "cc"]


async def test_a_failing_source_surfaces_its_error_with_the_outcomes_so_far() -> None:
    def items() -> Iterator[int]:
        yield 1
        raise OSError("disk gone")

    async def fn(i: int) -> int:
        return i

    with pytest.raises(errors.RunFailed, match="disk gone") as caught:
        await run(fn, items())
    assert isinstance(caught.value.__cause__, OSError)
    assert caught.value.result.values == [1]


async def test_skipped_coroutine_items_are_closed_not_left_unawaited() -> None:
    async def job(i: int) -> int:
        if i == 0:
            raise ValueError("first")
        await asyncio.sleep(0)
        return i

    jobs = [job(i) for i in range(5)]

    async def fn(coro: Any) -> int:
        return int(await coro)

    with pytest.raises(errors.RunAborted):
        await run(fn, jobs, concurrency=1, policy=FailurePolicy.FAIL_FAST)
    assert all(j.cr_frame is None for j in jobs)  # every coroutine ran or was closed


# -- cancellation ------------------------------------------------------------------------------


async def test_cancelling_the_caller_leaves_no_task_running() -> None:
    gate = Gate(8)
    fake = FakeProvider(responder=gate, latency=LONG)
    llm = connect(fake)
    before = asyncio.all_tasks()

    async def fn(i: int) -> str:
        return (await llm.complete(request(str(i)))).text

    caller = asyncio.create_task(run(fn, range(100), concurrency=8))
    await gate.opened.wait()
    caller.cancel()
    with pytest.raises(asyncio.CancelledError):
        await caller
    assert leftover_tasks(before) == []
    assert fake.cancelled == 8
    assert fake.in_flight == 0
    assert len(fake.calls) == 8


async def test_cancelling_a_stream_consumer_leaves_no_task_running() -> None:
    gate = Gate(6)
    fake = FakeProvider(responder=gate, latency=LONG)
    llm = connect(fake)
    before = asyncio.all_tasks()

    async def fn(i: int) -> str:
        return (await llm.complete(request(str(i)))).text

    async def consume() -> None:
        async with stream(fn, range(100), concurrency=6) as outcomes:
            async for _ in outcomes:
                pass

    caller = asyncio.create_task(consume())
    await gate.opened.wait()
    caller.cancel()
    with pytest.raises(asyncio.CancelledError):
        await caller
    assert leftover_tasks(before) == []
    assert fake.cancelled == 6


async def test_breaking_out_of_a_stream_cancels_the_rest() -> None:
    fake = FakeProvider(
        rules=load_rules([{"match": "quick", "reply": "done", "latency": 0.001}]), latency=LONG
    )
    llm = connect(fake)
    before = asyncio.all_tasks()

    async def fn(text: str) -> str:
        return (await llm.complete(request(text))).text

    items = ["slow", "quick", "slow", "slow", "slow", "slow", "slow"]
    async with stream(fn, items, concurrency=4) as outcomes:
        async for outcome in outcomes:
            assert outcome.value == "done"
            break
    assert leftover_tasks(before) == []
    assert fake.in_flight == 0
    # the quick call's worker may have started one more before the consumer broke off
    assert len(fake.calls) in (4, 5)
    assert fake.cancelled == len(fake.calls) - 1


async def test_an_exception_in_the_consumer_cancels_the_rest() -> None:
    gate = Gate(3)
    fake = FakeProvider(responder=gate, latency=LONG)
    llm = connect(fake)
    before = asyncio.all_tasks()

    async def fn(i: int) -> str:
        return (await llm.complete(request(str(i)))).text

    async def consume() -> None:
        async with stream(fn, range(10), concurrency=3):
            await gate.opened.wait()
            raise KeyError("consumer broke")

    with pytest.raises(KeyError):
        await consume()
    assert leftover_tasks(before) == []
    assert fake.cancelled == 3


async def test_a_source_generator_is_closed_when_the_stream_ends_early() -> None:
    closed = False

    async def items() -> AsyncIterator[int]:
        nonlocal closed
        try:
            for i in itertools.count():
                yield i
        finally:
            closed = True

    async def fn(i: int) -> int:
        return i

    async with stream(fn, items(), concurrency=2) as outcomes:
        await anext(outcomes)
    assert closed


async def test_aclose_is_idempotent_and_iteration_after_the_end_stops() -> None:
    async def fn(i: int) -> int:
        return i

    flow = stream(fn, range(3))
    async with flow:
        got = [o.value async for o in flow]
    await flow.aclose()
    assert sorted(got) == [0, 1, 2]
    with pytest.raises(StopAsyncIteration):
        await anext(flow)


# -- nesting -------------------------------------------------------------------------------------


async def test_nested_run_rolls_usage_up_into_the_outer_task() -> None:
    fake = FakeProvider(responder=lambda r: "inner answer", price=PRICE)
    llm = connect(fake)

    async def inner(text: str) -> str:
        return (await llm.complete(request(text))).text

    async def outer(section: str) -> int:
        votes = await run(inner, [f"{section} voter {v}" for v in range(3)], label="vote")
        return len(votes.values)

    result = await run(outer, ["intro", "body"], label="sections")
    assert result.values == [3, 3]
    for outcome in result.outcomes:
        assert outcome.calls == 3
        assert outcome.usage.output_tokens == 3 * 3  # "inner answer" is 3 tokens
        assert (outcome.cost or 0) > 0
    assert result.summary.usage.output_tokens == 18
    assert len(fake.calls) == 6


async def test_nested_run_shares_the_outer_budget() -> None:
    llm = connect(FakeProvider(responder=lambda r: "answer"))
    budget = Budget(tokens=20)

    async def inner(text: str) -> str:
        return (await llm.complete(request(text))).text

    async def outer(section: int) -> RunResult[str]:
        return await run(inner, [f"sec{section}-v{v:02d}" for v in range(4)], concurrency=1)

    result = await run(outer, range(3), concurrency=1, budget=budget)
    first = result.outcomes[0].value
    assert first is not None
    # 4 tokens a call: the fifth call passes the cap, inside the second section
    assert first.summary.count(Status.OK) == 4
    second = result.outcomes[1].value
    assert second is not None
    assert [o.status for o in second.outcomes] == [Status.OK, Status.SKIPPED, Status.SKIPPED, Status.SKIPPED]
    assert result.outcomes[2].status is Status.SKIPPED
    assert budget.spent_tokens == 20


async def test_nested_run_inherits_the_outer_deadline() -> None:
    async def inner(i: int) -> int:
        await asyncio.sleep(LONG)
        return i

    inner_runs: list[asyncio.Future[RunResult[int]]] = []

    async def outer(_: int) -> int:
        # shielded, so that the inner run can only end by its own (inherited) deadline
        inner_run = asyncio.ensure_future(run(inner, range(2)))  # no deadline of its own
        inner_runs.append(inner_run)
        return len((await asyncio.shield(inner_run)).values)

    result = await run(outer, [0], deadline=0.5)  # room for both inner tasks to start
    assert result.outcomes[0].status is Status.TIMEOUT
    inner_result = await asyncio.wait_for(inner_runs[0], 5)
    assert [o.status for o in inner_result.outcomes] == [Status.TIMEOUT, Status.TIMEOUT]
    assert "deadline" in (inner_result.outcomes[0].error_message or "")


async def test_nested_events_carry_the_run_labels() -> None:
    labels: set[str] = set()

    async def inner(i: int) -> int:
        return i

    async def outer(i: int) -> int:
        return len((await run(inner, range(2), label="inner")).values)

    await run(outer, range(2), label="outer", on_event=lambda e: labels.add(e.run))
    assert labels == {"outer", "outer/inner"}


async def test_usage_of_calls_outside_any_run_is_not_charged_anywhere() -> None:
    llm = connect(FakeProvider(responder=lambda r: "free"))
    reply = await llm.complete(request("hello"))
    assert reply.usage == Usage(2, 1)


async def test_ready_hands_out_what_finished_without_waiting() -> None:
    import asyncio as _asyncio

    from quorum.engine import stream as _stream

    async def quick(i: int) -> int:
        await _asyncio.sleep(0.001 * i)
        return i

    async with _stream(quick, range(4), concurrency=4) as flow:
        first = await flow.__anext__()
        await _asyncio.sleep(0.05)  # the others finish meanwhile
        rest = flow.ready()
        assert flow.ready() == []  # handed out once
    assert sorted([first.value, *[o.value for o in rest]]) == [0, 1, 2, 3]


async def test_pullers_that_waited_on_an_async_source_take_ready_items_at_once() -> None:
    """Workers piled up behind an async source that waited (a queue gone empty) all take
    an item within a couple of event-loop turns once items are back. A fair lock hands
    the source over one waiter per turn: a cluster worker fed that way ran about a
    quarter of its calls in flight while a hundred items waited in its queue."""
    from quorum.engine.source import Source

    queue: asyncio.Queue[int] = asyncio.Queue()

    async def items() -> AsyncIterator[int]:
        while True:
            yield await queue.get()

    source = Source(items())
    got: list[tuple[int] | None] = []

    async def pull() -> None:
        got.append(await source.next())

    pullers = [asyncio.create_task(pull()) for _ in range(20)]
    await asyncio.sleep(0)  # one puller waits inside the iterator, the others behind it
    for item in range(20):
        queue.put_nowait(item)
    for _ in range(4):
        await asyncio.sleep(0)
    try:
        assert sorted(pulled[0] for pulled in got if pulled is not None) == list(range(20))
    finally:
        for puller in pullers:
            puller.cancel()
        await asyncio.gather(*pullers, return_exceptions=True)


def test_a_run_that_made_no_call_spent_nothing_rather_than_an_unknown_cost() -> None:
    """Every answer from the cache: nothing was paid, and the totals say $0, not
    "cost unknown"; a call with no price keeps the cost unknown."""
    from quorum.apps.totals import totals
    from quorum.engine.outcome import Summary

    nothing = Summary()
    assert nothing.known_cost == 0.0
    assert nothing.spent_text() == "$0.0000"
    assert "$0.0000" in nothing.line()
    assert totals(nothing)["cost_usd"] == 0.0
    unpriced = Summary(calls=2, unpriced=2)
    assert unpriced.known_cost is None
    assert unpriced.spent_text() == "cost unknown"
    partly = Summary(calls=3, cost=0.5, unpriced=1)
    assert partly.spent_text() == "$0.5000 (+1 unpriced)"
