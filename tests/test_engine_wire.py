"""The engine on the wire: the official Anthropic SDK against the local emulator.

What a cancelled call must do on a real connection (close it, so the server stops working
and billing stops), what a retried 429 or 529 looks like through the real SDK, and that
an outer cancel leaves nothing open. Retry waits go through a ``VirtualClock``; the few
real waits are the emulator's short latencies and the time the server takes to notice a
closed connection.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from quorum import errors
from quorum.engine import Connection, FailurePolicy, Quorum, Retry, Status, connect, run
from quorum.llm import Request
from quorum.testing.clock import VirtualClock
from quorum.testing.emulator import Emulator

MODEL = "anthropic/claude-sonnet-5-5"
LONG = 30.0  # an emulator latency no test waits for: such calls are always cancelled
RULES = [
    {"match": "quick", "reply": "yes", "latency": 0.01},
    {"match": "later", "reply": "yes", "latency": 0.2},
    # long enough that the calls started beside it are on the wire before it answers
    {"match": "refuse", "error": "bad_request", "latency": 0.3},
]


def wire(emu: Emulator, **options: Any) -> Connection:
    return connect(MODEL, base_url=emu.anthropic_base_url, api_key="test-key", **options)


@pytest.fixture
async def emu() -> AsyncIterator[Emulator]:
    async with Emulator(script=RULES, latency=LONG) as emulator:
        yield emulator


async def eventually(check: Callable[[], bool], seconds: float = 3.0) -> bool:
    """Whether ``check()`` comes true within ``seconds`` (the server sees closes shortly after)."""
    for _ in range(int(seconds / 0.01)):
        if check():
            return True
        await asyncio.sleep(0.01)
    return check()


def serving(task: asyncio.Task[Any]) -> bool:
    """A task of the emulator's server (it shares this event loop), not of the client."""
    code = getattr(task.get_coro(), "cr_code", None)
    return code is not None and ("/quorum/testing/" in code.co_filename or "/aiohttp/" in code.co_filename)


def ask(llm: Connection) -> Callable[[str], Any]:
    async def fn(prompt: str) -> str:
        return (await llm.complete(Request.of(prompt, max_tokens=16))).text

    return fn


async def test_fail_fast_closes_the_connections_of_the_calls_in_flight(emu: Emulator) -> None:
    llm = wire(emu)
    prompts = ["wait 0", "wait 1", "refuse 2", "wait 3", "wait 4", "wait 5", "wait 6"]
    try:
        with pytest.raises(errors.RunAborted) as caught:
            await run(ask(llm), prompts, concurrency=4, policy=FailurePolicy.FAIL_FAST)
        assert isinstance(caught.value.__cause__, errors.BadRequest)
        assert caught.value.__cause__.status == 400
        statuses = [o.status for o in caught.value.result.outcomes]
        assert statuses == [Status.CANCELLED] * 2 + [Status.ERROR, Status.CANCELLED] + [Status.SKIPPED] * 3
        # the three calls in flight were abandoned on the wire, not left to finish
        assert await eventually(lambda: emu.stats.aborted == 3)
        assert await eventually(lambda: emu.stats.in_flight == 0)
        assert emu.stats.count(status=400) == 1
        assert emu.stats.count(status=200) == 0
    finally:
        await llm.aclose()


async def test_a_quorum_closes_the_connections_it_no_longer_needs(emu: Emulator) -> None:
    llm = wire(emu)
    prompts = ["wait 0", "quick 1", "later 2", "wait 3", "wait 4", "wait 5"]
    try:
        result = await run(ask(llm), prompts, concurrency=4, policy=Quorum(2))
        statuses = [o.status for o in result.outcomes]
        ok, cancelled, skipped = Status.OK, Status.CANCELLED, Status.SKIPPED
        assert statuses == [cancelled, ok, ok, cancelled, cancelled, skipped]
        assert result.values == ["yes", "yes"]
        assert await eventually(lambda: emu.stats.aborted == 3)
        assert emu.stats.count(status=200) == 2
        assert all(o.usage.input_tokens > 0 for o in result.outcomes if o.ok)
    finally:
        await llm.aclose()


async def test_injected_429_and_529_are_retried_through_the_real_sdk() -> None:
    clock = VirtualClock()
    async with Emulator(errors={"429": 0.25, "529": 0.25}, seed=11) as emu:
        llm = wire(emu, clock=clock, retry=Retry(attempts=20, jitter=0.0, deadline=None))  # 0.5^20 a call
        try:
            result = await run(ask(llm), [f"question {i}" for i in range(30)], concurrency=5, clock=clock)
        finally:
            await llm.aclose()
        assert all(o.ok for o in result.outcomes)
        refused, overloaded = emu.stats.count(status=429), emu.stats.count(status=529)
        assert refused > 0
        assert overloaded > 0
        # every failed call was retried, once per failure: no retry layer stacked on another
        assert emu.stats.total == 30 + refused + overloaded
        assert sum(o.attempts for o in result.outcomes) == emu.stats.total
        assert result.summary.retries == refused + overloaded
        # the 429s' retry-after (1 s, from the emulator) was honoured instead of the backoff
        assert clock.slept.count(1.0) >= refused


async def test_a_rate_limited_call_carries_the_headers_and_retry_after() -> None:
    async with Emulator(errors={"429": 1.0}, retry_after=7) as emu:
        llm = wire(emu, retry=Retry(attempts=1))
        try:
            with pytest.raises(errors.RateLimited) as caught:
                await llm.complete(Request.of("hello"))
        finally:
            await llm.aclose()
    assert caught.value.retry_after == 7.0
    assert caught.value.status == 429


async def test_an_outer_cancel_leaves_no_call_and_no_connection_open(emu: Emulator) -> None:
    llm = wire(emu)
    before = asyncio.all_tasks()
    caller = asyncio.create_task(run(ask(llm), [f"wait {i}" for i in range(50)], concurrency=6))
    assert await eventually(lambda: emu.stats.in_flight == 6)
    caller.cancel()
    with pytest.raises(asyncio.CancelledError):
        await caller
    me = asyncio.current_task()
    running = [t for t in asyncio.all_tasks() - before if t is not me and not t.done()]
    assert [t for t in running if not serving(t)] == []  # the client side: nothing left
    assert await eventually(lambda: emu.stats.aborted == 6)
    assert await eventually(lambda: emu.stats.in_flight == 0)
    await llm.aclose()
    assert await eventually(lambda: emu.stats.connections_open == 0)
    assert emu.stats.count(status=200) == 0


async def test_a_call_timeout_on_the_wire_closes_the_call_and_is_retried(emu: Emulator) -> None:
    clock = VirtualClock()
    llm = wire(emu, timeout=0.05, clock=clock, retry=Retry(attempts=2, jitter=0.0))
    try:
        with pytest.raises(errors.Timeout):
            await llm.complete(Request.of("wait"))
    finally:
        await llm.aclose()
    assert clock.slept == [0.5]
    assert await eventually(lambda: emu.stats.aborted == 2)


async def test_usage_and_cost_come_from_the_wire() -> None:
    async with Emulator(script=[{"match": ".", "reply": "four words right here"}]) as emu:
        llm = wire(emu)
        try:
            result = await run(ask(llm), ["a question of some length", "another"])
        finally:
            await llm.aclose()
    for outcome in result.outcomes:
        assert outcome.usage.output_tokens == 6  # "four words right here": 21 characters
        assert outcome.usage.input_tokens > 0
        assert outcome.cost is not None
        assert outcome.cost > 0
    assert result.summary.cost == pytest.approx(sum(o.cost or 0 for o in result.outcomes))
