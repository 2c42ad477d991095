"""The call layer under adversarial use: garbled bodies, budgets under concurrency, unpriced
models, one classification, clamped pauses, deadlines over retry sleeps, checked options,
several event loops, and honest accounting of failed calls."""

from __future__ import annotations

import asyncio
import logging
import math
import time
from typing import Any

import pytest

from quorum import errors
from quorum.engine import Budget, Retry, Status, connect, context, run
from quorum.engine.context import Meter, Scope
from quorum.engine.cost import Cost
from quorum.engine.limits import Concurrency, RequestRate
from quorum.engine.retry import worth_rerunning
from quorum.llm import FakeProvider, Price, Request
from quorum.llm.anthropic import AnthropicProvider
from quorum.llm.ratelimits import Bucket, RateLimitInfo, parse_headers
from quorum.testing import Emulator
from quorum.testing.clock import VirtualClock

PRICE = Price(input=3.0, output=15.0, cache_read=0.3, cache_write=3.75)
FAST = Retry(base_delay=0.001, max_delay=0.002)


def failing_first(times: int, error: Exception, answer: Any = "fine") -> Any:
    seen = {"n": 0}

    def responder(_: Request) -> Any:
        seen["n"] += 1
        return error if seen["n"] <= times else answer

    return responder


# --- a body that does not parse is retried; a schema violation is final ------------------


async def test_a_garbled_body_is_retried_by_the_connection() -> None:
    garbled = errors.MalformedReply("body is not JSON", status=200, provider="fake")
    fake = FakeProvider(responder=failing_first(2, garbled))
    llm = connect(fake, clock=VirtualClock())
    reply = await llm.complete(Request.of("hi"))
    assert reply.text == "fine"
    assert len(fake.calls) == 3


async def test_the_fake_can_inject_garbled_bodies() -> None:
    fake = FakeProvider(error_rate={"malformed": 1.0})
    llm = connect(fake, clock=VirtualClock(), retry=Retry(attempts=3))
    with pytest.raises(errors.MalformedReply):
        await llm.complete(Request.of("hi"))
    assert len(fake.calls) == 3


async def test_a_schema_violation_stays_final() -> None:
    schema = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}
    fake = FakeProvider(responder=lambda r: {"n": "not a number"})
    llm = connect(fake, clock=VirtualClock())
    with pytest.raises(errors.InvalidReply):
        await llm.complete(Request.of("hi", schema=schema))
    assert len(fake.calls) == 1


async def test_garbled_bodies_on_the_wire_are_retried_until_answered() -> None:
    async with Emulator(errors={"malformed": 0.4}, seed=3) as emu:
        provider = AnthropicProvider(
            "claude-sonnet-5-5", api_key="x", base_url=emu.anthropic_base_url, timeout=2
        )
        # 20 attempts: the seed fixes the draws, not which call gets them (arrival order
        # varies), and 8 in a row at 40% for one of 20 calls is a 1% chance
        llm = connect(provider, retry=Retry(attempts=20, base_delay=0.001, max_delay=0.002))
        replies = await asyncio.gather(*(llm.complete(Request.of(f"q{i}")) for i in range(20)))
        await llm.aclose()
        assert len(replies) == 20
        assert emu.stats.total > 20  # some bodies came garbled and were asked again


# --- money: the budget is re-checked after the limits, and reserved before dispatch ------


async def test_the_budget_is_checked_again_after_the_rate_limit_wait() -> None:
    clock = VirtualClock()
    fake = FakeProvider(responder=lambda r: "x" * 400, price=PRICE)  # about $0.0015 a call
    llm = connect(fake, rpm=60, concurrency=32, clock=clock)
    budget = Budget(dollars=0.005)

    async def fn(i: int) -> str:
        return (await llm.complete(Request.of(f"q{i}", max_tokens=100))).text

    await run(fn, range(40), concurrency=32, budget=budget, clock=clock)
    per_call = fake._cost(fake._reply(Request.of("q1", max_tokens=100), "x" * 400, 0).usage) or 0
    assert budget.spent_dollars <= 0.005 + per_call
    assert len(fake.calls) <= 5


async def test_the_budget_does_not_overshoot_with_the_concurrency() -> None:
    fake = FakeProvider(responder=lambda r: "x" * 400, price=PRICE, latency=0.01)
    llm = connect(fake)
    budget = Budget(dollars=0.01)

    async def fn(i: int) -> str:
        return (await llm.complete(Request.of(f"q{i}", max_tokens=100))).text

    result = await run(fn, range(100), concurrency=32, budget=budget)
    one_call = 0.0016  # 100 output tokens at $15/M plus a few input tokens, estimated
    assert budget.spent_dollars <= 0.01 + one_call
    assert result.summary.count(Status.OK) <= 8


async def test_a_token_budget_does_not_overshoot_with_the_concurrency() -> None:
    fake = FakeProvider(responder=lambda r: "x" * 400, latency=0.01)
    llm = connect(fake)
    budget = Budget(tokens=1000)

    async def fn(i: int) -> str:
        return (await llm.complete(Request.of(f"q{i}", max_tokens=100))).text

    await run(fn, range(100), concurrency=32, budget=budget)
    assert budget.spent_tokens <= 1000 + 110


async def test_a_dollar_budget_on_an_unpriced_model_is_refused_by_name() -> None:
    fake = FakeProvider(model="my-finetune-v3")
    llm = connect(fake)

    async def fn(i: int) -> str:
        return (await llm.complete(Request.of(f"q{i}"))).text

    result = await run(fn, range(5), budget=Budget(dollars=0.0001))
    assert not fake.calls
    error = result.outcomes[0].error
    assert isinstance(error, errors.ConfigError)
    assert "my-finetune-v3" in str(error)
    assert "set_price" in str(error)


async def test_a_token_budget_on_an_unpriced_model_is_fine() -> None:
    fake = FakeProvider(model="my-finetune-v3")
    llm = connect(fake)
    result = await run(lambda i: llm.complete(Request.of(f"q{i}")), range(3), budget=Budget(tokens=10**6))
    assert result.summary.count(Status.OK) == 3


# --- one classification ------------------------------------------------------------------


@pytest.mark.parametrize(
    "exc",
    [
        errors.RequestTooLarge("too big"),
        errors.BudgetExceeded("spent"),
        errors.BadRequest("no", status=400),
    ],
)
async def test_what_cannot_pass_is_never_retried_whatever_retry_on_says(exc: Exception) -> None:
    fake = FakeProvider(responder=lambda r: exc)
    llm = connect(fake, retry=Retry(retry_on=lambda e: True), clock=VirtualClock())
    with pytest.raises(type(exc)):
        await llm.complete(Request.of("hi"))
    assert len(fake.calls) == 1
    assert not worth_rerunning(exc)


def test_a_foreign_400_is_not_worth_rerunning_but_a_503_is() -> None:
    class SdkError(Exception):
        def __init__(self, status_code: int) -> None:
            self.status_code = status_code

    assert not worth_rerunning(SdkError(400))
    assert not worth_rerunning(SdkError(404))
    assert worth_rerunning(SdkError(503))
    assert worth_rerunning(SdkError(429))


# --- learned pauses are clamped ----------------------------------------------------------


@pytest.mark.parametrize("advice", [86400.0, 1e9, math.inf])
def test_a_huge_retry_after_pauses_a_rate_limit_at_most_a_minute(advice: float) -> None:
    clock = VirtualClock()
    rate = RequestRate(60, clock=clock)
    rate.learn(RateLimitInfo(retry_after=advice))
    assert rate.available_at <= clock.now() + 60.0


def test_the_longest_pause_is_configurable() -> None:
    clock = VirtualClock()
    rate = RequestRate(60, clock=clock, max_pause=5.0)
    rate.learn(RateLimitInfo(retry_after=30.0))
    assert rate.available_at <= clock.now() + 5.0


def test_an_absurd_remaining_count_is_ignored_with_a_debug_log(caplog: pytest.LogCaptureFixture) -> None:
    clock = VirtualClock()
    rate = RequestRate(60, clock=clock)
    before = rate.available_at
    with caplog.at_level(logging.DEBUG, logger="quorum.limits"):
        rate.learn(RateLimitInfo(buckets={"requests": Bucket(limit=60, remaining=-1_000_000)}))
    assert rate.available_at == before
    assert "remaining" in caplog.text


def test_a_reset_given_as_a_unix_timestamp_is_read_as_a_time() -> None:
    headers = {
        "x-ratelimit-limit-requests": "600",
        "x-ratelimit-remaining-requests": "10",
        "x-ratelimit-reset-requests": str(int(time.time()) + 30),
    }
    bucket = parse_headers(headers).buckets["requests"]
    assert bucket.reset_s is not None
    assert 25 <= bucket.reset_s <= 31
    in_ms = {**headers, "x-ratelimit-reset-requests": str(int(time.time() * 1000) + 30_000)}
    bucket = parse_headers(in_ms).buckets["requests"]
    assert bucket.reset_s is not None
    assert 25 <= bucket.reset_s <= 31


@pytest.mark.parametrize("advice", ["86400", "1e9", "inf"])
async def test_a_huge_retry_after_never_stalls_the_retry_layer(advice: str) -> None:
    clock = VirtualClock()
    limited = errors.RateLimited("slow down", status=429, retry_after=float(advice))
    fake = FakeProvider(responder=failing_first(1, limited))
    llm = connect(fake, clock=clock, retry=Retry(deadline=None))
    await llm.complete(Request.of("hi"))
    assert clock.now() <= 60.0 + 1e-6


# --- retry sleeps never outlive the run's deadline or the task's timeout ----------------


async def test_a_retry_that_would_outlive_the_deadline_is_not_scheduled() -> None:
    clock = VirtualClock()
    fake = FakeProvider(responder=lambda r: errors.ServerError("down", status=500))
    llm = connect(fake, clock=clock, retry=Retry(attempts=3, base_delay=5, jitter=0))
    token = context.current_scope.set(Scope(deadline=asyncio.get_running_loop().time() + 1.0))
    try:
        with pytest.raises(errors.ServerError) as caught:
            await llm.complete(Request.of("hi"))
    finally:
        context.current_scope.reset(token)
    assert clock.now() < 1.0
    assert len(fake.calls) == 1
    assert caught.value.call_layer_done


async def test_a_retry_that_would_outlive_the_task_timeout_is_not_scheduled() -> None:
    clock = VirtualClock()
    fake = FakeProvider(responder=lambda r: errors.ServerError("down", status=500))
    llm = connect(fake, clock=clock, retry=Retry(attempts=3, base_delay=5, jitter=0))
    meter = Meter("t", 0, clock, deadline=asyncio.get_running_loop().time() + 1.0)
    token = context.current_meter.set(meter)
    try:
        with pytest.raises(errors.ServerError):
            await llm.complete(Request.of("hi"))
    finally:
        context.current_meter.reset(token)
    assert clock.now() < 1.0
    assert meter.calls == 1  # the failed call is counted


async def test_under_a_run_deadline_the_task_sees_the_call_error_promptly() -> None:
    clock = VirtualClock()
    fake = FakeProvider(responder=lambda r: errors.ServerError("down", status=500))
    llm = connect(fake, clock=clock, retry=Retry(attempts=3, base_delay=5, jitter=0))
    result = await run(lambda i: llm.complete(Request.of(str(i))), range(3), deadline=1.0, clock=clock)
    assert clock.now() < 1.0
    assert all(isinstance(o.error, errors.ServerError) for o in result.outcomes)


# --- failed calls are counted, and the final error is marked done ----------------------


async def test_failed_calls_are_counted_and_the_final_error_is_marked() -> None:
    clock = VirtualClock()
    fake = FakeProvider(responder=lambda r: errors.ServerError("down", status=500))
    llm = connect(fake, clock=clock, retry=Retry(attempts=3))
    result = await run(lambda i: llm.complete(Request.of("x")), [0], clock=clock)
    outcome = result.outcomes[0]
    assert isinstance(outcome.error, errors.ServerError)
    assert outcome.error.call_layer_done
    assert outcome.calls == 3


# --- numeric options are checked ---------------------------------------------------------


@pytest.mark.parametrize(
    "options",
    [
        {"rpm": math.nan},
        {"rpm": "60"},
        {"rpm": math.inf},
        {"itpm": -1},
        {"tpm": True},
        {"concurrency": 1.5},
        {"concurrency": 0},
        {"concurrency": True},
        {"timeout": math.nan},
        {"timeout": -1},
        {"max_pause": math.nan},
    ],
)
def test_connect_refuses_bad_numbers_with_a_config_error(options: dict[str, Any]) -> None:
    with pytest.raises(errors.ConfigError, match=next(iter(options))):
        connect(FakeProvider(), **options)


@pytest.mark.parametrize(
    "make",
    [
        lambda: Budget(dollars=math.nan),
        lambda: Budget(dollars="5"),
        lambda: Budget(tokens=1.5),
        lambda: Budget(tokens=math.inf),
        lambda: Retry(attempts=1.5),
        lambda: Retry(base_delay=math.nan),
        lambda: Retry(max_delay=-1),
        lambda: Retry(deadline=math.nan),
        lambda: Retry(multiplier="2"),
        lambda: Concurrency(2.5),
        lambda: RequestRate(math.nan),
        lambda: RequestRate(60, burst_s=math.inf),
    ],
)
def test_limits_retry_and_budget_refuse_bad_numbers(make: Any) -> None:
    with pytest.raises(errors.ConfigError):
        make()


# --- a connection works on every event loop it is used on --------------------------------

SHARED = connect(FakeProvider(latency=0.001), concurrency=2, rpm=6000)


def test_a_module_level_connection_serves_two_event_loops() -> None:
    async def batch() -> int:
        replies = await asyncio.gather(*(SHARED.complete(Request.of(str(i))) for i in range(8)))
        return len(replies)

    assert asyncio.run(batch()) == 8
    assert asyncio.run(batch()) == 8


async def test_a_concurrency_limit_still_holds_after_binding_lazily() -> None:
    fake = FakeProvider(latency=0.005)
    llm = connect(fake, concurrency=3)
    await asyncio.gather(*(llm.complete(Request.of(str(i))) for i in range(12)))
    assert fake.max_in_flight == 3


async def test_a_rate_limit_acquired_on_a_new_loop_keeps_its_schedule() -> None:
    clock = VirtualClock()
    rate = RequestRate(60, clock=clock)
    await rate.acquire(Cost())
    assert rate.available_at > clock.now()


async def test_a_call_cut_off_by_a_task_timeout_keeps_the_last_call_error_in_the_chain() -> None:
    seen = {"n": 0}

    async def responder(_: Request) -> Any:
        seen["n"] += 1
        if seen["n"] == 1:
            return errors.ServerError("down", status=500)
        await asyncio.sleep(10)  # the second try hangs until the task's timeout
        return "late"

    llm = connect(FakeProvider(responder=responder), retry=Retry(base_delay=0.001, jitter=0))
    with pytest.raises(TimeoutError) as caught:
        async with asyncio.timeout(0.05):
            await llm.complete(Request.of("hi"))
    chain: list[BaseException] = []
    link: BaseException | None = caught.value
    while link is not None:
        chain.append(link)
        link = link.__cause__ or link.__context__
    assert any(isinstance(e, errors.ServerError) for e in chain)


# --- the per-call timeout: one watch per connection ---------------------------------------


async def test_calls_that_outlive_the_timeout_fail_while_quick_ones_answer() -> None:
    async def responder(request: Request) -> str:
        await asyncio.sleep(1.0 if "slow" in request.text else 0.001)
        return "done"

    # 0.5 s: a busy machine's pause must not outlast it, while the slow calls do (1 s)
    llm = connect(FakeProvider(responder=responder), timeout=0.5, retry=Retry(attempts=1))
    asks = [f"slow {i}" if i % 3 == 0 else f"quick {i}" for i in range(12)]
    replies = await asyncio.gather(*(llm.complete(Request.of(a)) for a in asks), return_exceptions=True)
    timed_out = [ask for ask, reply in zip(asks, replies, strict=True) if isinstance(reply, errors.Timeout)]
    assert timed_out == [ask for ask in asks if ask.startswith("slow")]
    assert sum(not isinstance(reply, BaseException) for reply in replies) == 8


async def test_a_cancelled_call_stays_cancelled_not_timed_out() -> None:
    llm = connect(FakeProvider(latency=1.0), timeout=5.0)
    call = asyncio.ensure_future(llm.complete(Request.of("hi")))
    await asyncio.sleep(0.01)
    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await call


async def test_a_timeout_on_a_later_call_after_a_quiet_spell_still_fires() -> None:
    llm = connect(FakeProvider(responder=lambda r: "ok"), timeout=0.05, retry=Retry(attempts=1))
    await llm.complete(Request.of("quick"))
    await asyncio.sleep(0.1)  # the watch's timer has fired with nothing to cancel
    slow = connect(FakeProvider(latency=1.0), timeout=0.05, retry=Retry(attempts=1))
    llm.provider = slow.provider
    with pytest.raises(errors.Timeout):
        await llm.complete(Request.of("slow"))


async def test_a_provider_that_calls_through_another_connection_cannot_deadlock_the_budget() -> None:
    inner = connect(FakeProvider(responder=lambda r: "x" * 400, price=PRICE))

    class Relay(FakeProvider):
        async def complete(self, request: Request) -> Any:
            return await inner.complete(request)  # under the same budget as the outer call

    outer = connect(Relay(price=PRICE))
    budget = Budget(dollars=0.001)  # one call's reservation fills it

    async def fn(i: int) -> str:
        return (await outer.complete(Request.of(f"q{i}", max_tokens=100))).text

    result = await asyncio.wait_for(run(fn, range(2), budget=budget), timeout=5)
    # The relayed call finds the room taken by its own caller: refused, not waited for.
    assert isinstance(result.outcomes[0].error, errors.BudgetExceeded)
