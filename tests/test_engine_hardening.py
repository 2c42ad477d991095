"""The engine under adversarial use: no lost outcomes, time limits that hold, one retry
layer, streams that cannot leak, and no cost for concurrency that is not used.

Each test pins a failure the engine once had. Time is a ``VirtualClock`` wherever a wait
matters; the few real waits are a few hundredths of a second.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from quorum import errors
from quorum.engine import (
    Budget,
    FailurePolicy,
    Outcome,
    Retry,
    Status,
    connect,
    parallel_with_policy,
    run,
    stream,
)
from quorum.engine import context as engine_context
from quorum.llm import FakeProvider, Request, load_rules
from quorum.llm.types import Usage
from quorum.testing.clock import VirtualClock

LONG = 30.0  # a wait no test sits through: such tasks always end by a timeout or a cancel


class Escape(BaseException):
    """Not an ``Exception``: what ``pytest.fail()`` or a stray ``GeneratorExit`` raise."""


def leftover_tasks(before: set[asyncio.Task[Any]]) -> list[asyncio.Task[Any]]:
    me = asyncio.current_task()
    return [t for t in asyncio.all_tasks() - before if t is not me and not t.done()]


def request(text: str) -> Request:
    return Request.of(text, max_tokens=16)


# -- one retry layer -------------------------------------------------------------------------


async def test_retry_policy_over_an_always_failing_provider_makes_at_most_four_calls() -> None:
    clock = VirtualClock()
    fake = FakeProvider(rules=load_rules([{"match": ".", "error": "server_error"}]))
    llm = connect(fake, clock=clock)

    result = await run(llm.complete, [request("hello")], policy=FailurePolicy.RETRY, clock=clock)
    outcome = result.outcomes[0]
    assert outcome.status is Status.ERROR
    assert len(fake.calls) <= 4
    assert outcome.attempts == len(fake.calls)


async def test_retry_policy_over_a_connection_that_marks_its_final_error_makes_four_calls() -> None:
    """The contract, shown with the mark set by hand where the connection will set it."""
    clock = VirtualClock()
    fake = FakeProvider(rules=load_rules([{"match": ".", "error": "server_error"}]))
    llm = connect(fake, clock=clock)

    async def complete(request: Request) -> Any:
        try:
            return await llm.complete(request)
        except errors.QuorumError as exc:
            exc.call_layer_done = True
            raise

    result = await run(complete, [request("hello")], policy=FailurePolicy.RETRY, clock=clock)
    assert result.outcomes[0].status is Status.ERROR
    assert len(fake.calls) == llm.retry.attempts == 4
    assert result.outcomes[0].attempts == 4


async def test_retry_policy_does_not_rerun_what_the_call_layer_gave_up_on() -> None:
    clock = VirtualClock()
    tries = 0

    async def fn(_: int) -> None:
        nonlocal tries
        tries += 1
        failure = errors.ServerError("500 after the connection's retries", status=500)
        failure.call_layer_done = True
        raise failure

    outcome = (await run(fn, [0], policy=FailurePolicy.RETRY, clock=clock)).outcomes[0]
    assert (tries, outcome.attempts, clock.slept) == (1, 1, [])


@pytest.mark.parametrize(
    "failure",
    [
        errors.RequestTooLarge("bigger than a whole bucket"),
        errors.BudgetExceeded("dollar budget reached"),
        errors.BadRequest("400", status=400),
        errors.ConfigError("no key"),
    ],
)
async def test_retry_policy_does_not_rerun_what_can_never_pass(failure: Exception) -> None:
    clock = VirtualClock()
    tries = 0

    async def fn(_: int) -> None:
        nonlocal tries
        tries += 1
        raise failure

    await run(fn, [0], policy=FailurePolicy.RETRY, clock=clock)
    assert tries == 1


async def test_retry_policy_reruns_an_answer_that_broke_its_schema() -> None:
    clock = VirtualClock()
    tries = 0

    async def fn(_: int) -> str:
        nonlocal tries
        tries += 1
        if tries == 1:
            raise errors.InvalidReply("not the schema", text="{}")
        return "valid"

    outcome = (await run(fn, [0], policy=FailurePolicy.RETRY, clock=clock)).outcomes[0]
    assert (outcome.value, outcome.attempts, clock.slept) == ("valid", 2, [1.0])


# -- 1: a BaseException from the task function ----------------------------------------------------


@pytest.mark.parametrize("concurrency", [1, 4])
async def test_a_base_exception_from_a_task_propagates_out_of_run(concurrency: int) -> None:
    before = asyncio.all_tasks()
    ran: list[int] = []

    async def fn(i: int) -> int:
        ran.append(i)
        await asyncio.sleep(0)
        if i == 3:
            raise Escape("item 3")
        return i

    with pytest.raises(Escape, match="item 3"):
        await run(fn, range(10), concurrency=concurrency)
    assert leftover_tasks(before) == []
    assert 3 in ran


async def test_a_base_exception_from_a_task_propagates_out_of_a_stream_whose_summary_matches() -> None:
    seen: list[Outcome[int]] = []

    async def fn(i: int) -> int:
        await asyncio.sleep(0)
        if i == 3:
            raise Escape("item 3")
        return i

    flow = stream(fn, range(10), concurrency=4)

    async def consume() -> None:
        async with flow:
            async for outcome in flow:
                seen.append(outcome)

    with pytest.raises(Escape):
        await consume()
    assert flow.summary.total == len(seen)


# -- 2: REQUIRE_ALL and skipped work --------------------------------------------------------------


async def test_require_all_raises_when_a_budget_skipped_work() -> None:
    llm = connect(FakeProvider(responder=lambda r: "answer"))

    async def fn(text: str) -> str:
        return (await llm.complete(request(text))).text

    items = [f"query{i:03d}" for i in range(10)]
    with pytest.raises(errors.IncompleteRun, match="skipped") as caught:
        await run(fn, items, concurrency=1, budget=Budget(tokens=10), policy=FailurePolicy.REQUIRE_ALL)
    result = caught.value.result
    assert result.summary.count(Status.SKIPPED) == 7
    assert len(result.outcomes) == 10


async def test_require_all_raises_when_the_deadline_skipped_work() -> None:
    async def fn(i: int) -> int:
        time.sleep(0.03)  # noqa: ASYNC251 - succeeds, but holds the loop past the deadline
        return i

    with pytest.raises(errors.IncompleteRun, match="deadline") as caught:
        await run(fn, range(4), concurrency=1, deadline=0.02, policy=FailurePolicy.REQUIRE_ALL)
    statuses = [o.status for o in caught.value.result.outcomes]
    assert statuses == [Status.OK] + [Status.SKIPPED] * 3


async def test_parallel_with_policy_require_all_raises_when_a_budget_skipped_work() -> None:
    llm = connect(FakeProvider(responder=lambda r: "answer"))

    def task(i: int) -> Any:
        async def call() -> str:
            return (await llm.complete(request(f"query{i:03d}"))).text

        return call

    tasks = [(f"t{i}", task(i)) for i in range(10)]
    with pytest.raises(errors.IncompleteRun):
        await parallel_with_policy(
            tasks, FailurePolicy.REQUIRE_ALL, max_concurrent=1, budget=Budget(tokens=10)
        )


# -- 3: a source that raises ------------------------------------------------------------------------


async def test_a_source_that_raises_after_five_items_keeps_their_paid_outcomes() -> None:
    fake = FakeProvider(responder=lambda r: "answer", latency=0.01)
    llm = connect(fake)

    async def items() -> AsyncIterator[str]:
        for i in range(5):
            yield f"item {i}"
        raise OSError("the input file went away")

    async def fn(text: str) -> str:
        return (await llm.complete(request(text))).text

    with pytest.raises(errors.RunFailed, match="went away") as caught:
        await run(fn, items(), concurrency=8)
    result = caught.value.result
    assert result.values == ["answer"] * 5
    assert [o.index for o in result.outcomes] == list(range(5))
    assert isinstance(caught.value.__cause__, OSError)
    assert len(fake.calls) == 5


# -- 9: retry sleeps bounded by the deadline and the task's timeout ----------------------------------


async def test_the_deadline_bounds_task_retry_sleeps() -> None:
    clock = VirtualClock()
    tries = 0

    async def flaky(_: int) -> int:
        nonlocal tries
        tries += 1
        raise ConnectionError("down")

    retry = Retry(attempts=3, base_delay=5, jitter=0.0, retry_on=lambda e: True)
    result = await run(flaky, range(3), deadline=1.0, retry=retry, clock=clock)
    assert clock.slept == []  # a 5 s wait cannot end before a 1 s deadline: not scheduled
    assert tries == 3
    assert all(isinstance(o.error, ConnectionError) for o in result.outcomes)


async def test_the_task_timeout_bounds_task_retry_sleeps() -> None:
    clock = VirtualClock()

    async def flaky(_: int) -> int:
        raise ConnectionError("down")

    retry = Retry(attempts=3, base_delay=5, jitter=0.0, retry_on=lambda e: True)
    outcome = (await run(flaky, [0], timeout=1.0, retry=retry, clock=clock)).outcomes[0]
    assert clock.slept == []
    assert outcome.attempts == 1
    assert isinstance(outcome.error, ConnectionError)


async def test_a_retry_that_fits_before_the_deadline_is_made() -> None:
    clock = VirtualClock()

    async def flaky(_: int) -> int:
        raise ConnectionError("down")

    retry = Retry(attempts=3, base_delay=0.5, jitter=0.0, retry_on=lambda e: True)
    outcome = (await run(flaky, [0], deadline=10.0, retry=retry, clock=clock)).outcomes[0]
    assert clock.slept == [0.5, 1.0]
    assert outcome.attempts == 3


async def test_the_task_timeout_is_the_tasks_end_for_the_calls_inside() -> None:
    seen: list[float | None] = []

    async def fn(_: int) -> None:
        seen.append(engine_context.time_left(asyncio.get_running_loop().time()))

    await run(fn, [0], timeout=2.0)
    await run(fn, [0])
    left, unbounded = seen
    assert left is not None
    assert 1.5 < left <= 2.0
    assert unbounded is None


# -- 11: streams cannot leak -------------------------------------------------------------------------


async def test_iterating_a_stream_after_its_block_ended_stops_at_once() -> None:
    async def fn(i: int) -> int:
        await asyncio.sleep(0)
        return i

    flow = stream(fn, range(100), concurrency=2)
    async with flow:
        await anext(flow)
    with pytest.raises(StopAsyncIteration):
        await asyncio.wait_for(anext(flow), 1)
    assert [o async for o in flow] == []


async def test_leaving_a_plain_async_for_closes_the_stream() -> None:
    fake = FakeProvider(
        rules=load_rules([{"match": "^quick", "reply": "done", "latency": 0.001}]), latency=LONG
    )
    llm = connect(fake)
    before = asyncio.all_tasks()

    async def fn(text: str) -> str:
        return (await llm.complete(request(text))).text

    items = ["quick"] + [f"slow {i}" for i in range(1000)]
    async for outcome in stream(fn, items, concurrency=4):
        assert outcome.value == "done"
        break
    for _ in range(5):
        await asyncio.sleep(0.01)  # time enough for a leaked stream to go on calling
    assert leftover_tasks(before) == []
    assert len(fake.calls) <= 4 + 1  # the four started together, and perhaps one more
    assert fake.in_flight == 0
    assert fake.cancelled == len(fake.calls) - 1


async def test_anext_on_a_stream_never_opened_says_how_to_read_it() -> None:
    async def fn(i: int) -> int:
        return i

    with pytest.raises(RuntimeError, match="async with"):
        await anext(stream(fn, range(3)))


# -- 13: run collects as tasks complete ---------------------------------------------------------------


async def test_run_is_not_held_up_by_a_slow_first_item() -> None:
    clock = VirtualClock()

    async def fn(i: int) -> int:
        await clock.sleep(50.0 if i == 0 else 1.0)
        return i

    result = await run(fn, range(40), concurrency=4, clock=clock)
    assert result.values == list(range(40))
    assert result.summary.wall_s == 50.0  # 39 one-second tasks on 3 workers fit inside it


# -- 14: a timeout keeps the call failure that caused it ------------------------------------------------


async def test_a_timeout_keeps_the_last_call_error_as_its_cause_and_counts_the_calls() -> None:
    """Against the contract with the connection: it counts each failed call
    (``note_failed_call``) and notes each retry before waiting for it."""
    failure = errors.ServerError("500 from the provider", status=500)

    async def fn(_: int) -> None:
        engine_context.note_failed_call()
        engine_context.note_retry(1, 0.5, failure)
        await asyncio.sleep(LONG)  # the connection's backoff, outliving the task

    outcome = (await run(fn, [0], timeout=0.05)).outcomes[0]
    assert outcome.status is Status.TIMEOUT
    assert outcome.error is not None
    assert outcome.error.__cause__ is failure
    assert outcome.calls == 1


async def test_a_call_answered_after_a_retry_is_not_blamed_for_a_later_timeout() -> None:
    async def fn(_: int) -> None:
        engine_context.note_retry(1, 0.5, errors.ServerError("500", status=500))
        engine_context.charge(Usage(2, 1), None)  # the retried call was answered
        await asyncio.sleep(LONG)  # then the task's own work ran too long

    outcome = (await run(fn, [0], timeout=0.02)).outcomes[0]
    assert outcome.status is Status.TIMEOUT
    assert outcome.error is not None
    assert outcome.error.__cause__ is None


async def test_a_timeout_through_a_connection_names_the_failed_call() -> None:
    hang = asyncio.Event()
    answers: list[Any] = [errors.ServerError("scripted 500", status=500)]

    async def responder(_: Request) -> Any:
        if answers:
            return answers.pop()
        await hang.wait()  # the retried call never answers
        return "late"

    llm = connect(FakeProvider(responder=responder), retry=Retry(base_delay=0.001, jitter=0.0))
    outcome = (await run(llm.complete, [request("x")], timeout=0.05)).outcomes[0]
    assert outcome.status is Status.TIMEOUT
    assert outcome.error is not None
    assert isinstance(outcome.error.__cause__, errors.ServerError)
    assert outcome.calls >= 1  # the failed call is counted; the one cut off may be too


# -- 15: workers start as items arrive ------------------------------------------------------------------


async def test_a_huge_concurrency_over_three_items_starts_a_few_workers() -> None:
    loop = asyncio.get_running_loop()
    created = 0

    def counting(loop: asyncio.AbstractEventLoop, coro: Any, **kw: Any) -> asyncio.Task[Any]:
        nonlocal created
        created += 1
        return asyncio.Task(coro, loop=loop, **kw)

    async def fn(i: int) -> int:
        await asyncio.sleep(0)
        return i

    previous = loop.get_task_factory()
    loop.set_task_factory(counting)  # type: ignore[arg-type]
    try:
        result = await run(fn, range(3), concurrency=100_000)
    finally:
        loop.set_task_factory(previous)
    assert result.values == [0, 1, 2]
    assert created <= 4  # a worker per item, and one that found the input ended


async def test_workers_still_reach_the_concurrency_when_items_keep_coming() -> None:
    fake = FakeProvider(responder=lambda r: "answer", latency=0.005)
    llm = connect(fake)

    async def fn(i: int) -> str:
        return (await llm.complete(request(str(i)))).text

    await run(fn, range(40), concurrency=8)
    assert fake.max_in_flight == 8
