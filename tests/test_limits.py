"""Limits on a virtual clock: spacing, token settlement, learning, refusal, composition."""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

import pytest

from quorum import errors
from quorum.engine import (
    Concurrency,
    Cost,
    InputTokenRate,
    Limits,
    OutputTokenRate,
    RequestRate,
    Retry,
    TokenRate,
    connect,
    estimate,
    run,
)
from quorum.llm import Bucket, FakeProvider, RateLimitInfo, Request
from quorum.llm.types import Usage
from quorum.testing.clock import VirtualClock

ONE = Cost(requests=1)
# The mechanics at round numbers: one second of burst, no reserve (the defaults are tested apart)
EXACT: dict[str, Any] = {"burst_s": 1.0, "margin": 0.0}


async def admissions(limit: Any, clock: VirtualClock, costs: list[Cost]) -> list[float]:
    """Acquire one call after another (releasing each at once); the admission times."""
    times = []
    for cost in costs:
        await limit.acquire(cost)
        times.append(clock.now())
        limit.release(cost, None)
    return times


# -- request rate ------------------------------------------------------------------------------


async def test_request_rate_allows_only_the_first_seconds_worth_at_start() -> None:
    clock = VirtualClock()
    limit = RequestRate(600, **EXACT, clock=clock)  # 10 a second
    times = await admissions(limit, clock, [ONE] * 40)
    assert times[:10] == [0.0] * 10  # one second's worth, not a minute's (600)
    assert times[10] == pytest.approx(0.1)
    gaps = [b - a for a, b in itertools.pairwise(times[10:])]
    assert gaps == pytest.approx([0.1] * len(gaps))  # then evenly spaced at the limit


async def test_by_default_half_a_second_goes_at_once_then_98_percent_of_the_limit() -> None:
    clock = VirtualClock()
    limit = RequestRate(600, clock=clock)  # 10 a second
    spacing = 60 / (600 * 0.98)  # 98% of the limit
    times = await admissions(limit, clock, [ONE] * 1005)
    assert times[:4] == [0.0] * 4  # what fits in half a second at that pace
    assert times[4] > 0.0
    # the n-th waits until it fits in the half-second burst: about 102.05 s for 1,005
    assert times[-1] == pytest.approx(1005 * spacing - 0.5)


async def test_the_reserve_leaves_room_for_arrival_jitter_at_one_request_a_second() -> None:
    """Against a provider bucket that holds exactly one request (60 rpm enforced as one a
    second), a request may reach it up to 20 ms early without being refused."""
    clock = VirtualClock()
    limit = RequestRate(60, clock=clock)
    times = await admissions(limit, clock, [ONE] * 5)
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert gaps == pytest.approx([60 / 58.8] * 4)
    assert min(gaps) - 1.0 >= 0.02 - 1e-9


def test_the_reserve_must_be_a_share() -> None:
    with pytest.raises(errors.ConfigError, match="margin"):
        RequestRate(60, margin=1.0)
    with pytest.raises(errors.ConfigError, match="margin"):
        InputTokenRate(60, margin=-0.1)


async def test_request_rate_over_a_long_run_holds_the_limit_exactly() -> None:
    clock = VirtualClock()
    limit = RequestRate(120, **EXACT, clock=clock)  # 2 a second
    times = await admissions(limit, clock, [ONE] * 242)
    # 2 at once, then 240 more at 0.5 s each: 120 a minute
    assert times[-1] == pytest.approx(120.0)
    in_first_minute = sum(t < 60.0 for t in times)
    assert in_first_minute == 2 + 119


async def test_a_burst_tolerance_of_several_seconds_is_a_choice() -> None:
    clock = VirtualClock()
    limit = RequestRate(60, burst_s=5.0, margin=0.0, clock=clock)
    times = await admissions(limit, clock, [ONE] * 7)
    assert times == pytest.approx([0, 0, 0, 0, 0, 1, 2])


async def test_a_slow_limit_sends_one_request_at_a_time() -> None:
    clock = VirtualClock()
    limit = RequestRate(30, **EXACT, clock=clock)  # one every two seconds: less than one a second
    times = await admissions(limit, clock, [ONE] * 3)
    assert times == pytest.approx([0, 2, 4])


async def test_idle_time_earns_back_at_most_the_burst() -> None:
    clock = VirtualClock()
    limit = RequestRate(600, **EXACT, clock=clock)
    await admissions(limit, clock, [ONE] * 10)
    clock.advance(3600.0)  # an hour idle
    times = await admissions(limit, clock, [ONE] * 12)
    assert sum(t == 3600.0 for t in times) == 10


async def test_waiters_are_admitted_in_arrival_order() -> None:
    clock = VirtualClock()
    limit = RequestRate(60, **EXACT, clock=clock)
    order: list[int] = []

    async def call(n: int) -> None:
        await limit.acquire(ONE)
        order.append(n)

    await asyncio.gather(*(call(n) for n in range(6)))
    assert order == list(range(6))
    assert clock.now() == pytest.approx(5.0)


def test_rates_must_be_positive() -> None:
    with pytest.raises(errors.ConfigError):
        RequestRate(0)
    with pytest.raises(errors.ConfigError):
        InputTokenRate(-5)
    with pytest.raises(errors.ConfigError):
        Concurrency(0)


# -- token rates: estimate, then settle ---------------------------------------------------------


async def test_input_tokens_are_charged_at_dispatch_then_settled() -> None:
    clock = VirtualClock()
    limit = InputTokenRate(6000, **EXACT, clock=clock)  # 100 tokens a second; burst 100 tokens
    big_guess = Cost(input_tokens=80)
    await limit.acquire(big_guess)
    limit.release(big_guess, Usage(input_tokens=20))  # an over-estimate gives quota back
    await limit.acquire(big_guess)
    assert clock.now() == 0.0  # 20 + 80 fit in the burst: no wait
    limit.release(big_guess, Usage(input_tokens=20))
    await limit.acquire(big_guess)
    assert clock.now() == pytest.approx(0.2)  # 20 + 20 + 80 = 120 tokens: 20 over


async def test_without_settlement_the_estimate_would_hold_back_the_next_call() -> None:
    clock = VirtualClock()
    limit = InputTokenRate(6000, **EXACT, clock=clock)
    guess = Cost(input_tokens=80)
    await limit.acquire(guess)
    limit.release(guess, None)  # a failed call: nothing known, the estimate stays charged
    await limit.acquire(guess)
    assert clock.now() == pytest.approx(0.6)  # 160 tokens: 60 over the 100-token burst


async def test_an_under_estimate_takes_more_quota_afterwards() -> None:
    clock = VirtualClock()
    limit = InputTokenRate(6000, **EXACT, clock=clock)
    small_guess = Cost(input_tokens=10)
    await limit.acquire(small_guess)
    limit.release(small_guess, Usage(input_tokens=300))
    await limit.acquire(small_guess)
    assert clock.now() == pytest.approx(2.1)  # 300 + 10 tokens, 100 of burst: 2.1 s


async def test_cached_tokens_count_against_the_input_limit() -> None:
    clock = VirtualClock()
    limit = InputTokenRate(6000, **EXACT, clock=clock)
    guess = Cost(input_tokens=50)
    await limit.acquire(guess)
    limit.release(guess, Usage(input_tokens=10, cache_read_tokens=100, cache_write_tokens=40))
    await limit.acquire(guess)
    assert clock.now() == pytest.approx(1.0)  # 150 settled + 50: 100 over


async def test_output_tokens_are_charged_max_tokens_then_settled() -> None:
    clock = VirtualClock()
    limit = OutputTokenRate(600, **EXACT, clock=clock)  # 10 tokens a second; burst 10 tokens
    cost = estimate(Request.of("hi", max_tokens=10))
    assert cost.output_tokens == 10
    await limit.acquire(cost)
    limit.release(cost, Usage(input_tokens=999, output_tokens=2))  # input tokens do not count
    await limit.acquire(cost)
    assert clock.now() == pytest.approx(0.2)  # 2 used + 10 charged: 2 over (not 10 over)


async def test_total_token_rate_counts_input_and_output() -> None:
    limit = TokenRate(6000)
    assert limit.units(Cost(input_tokens=30, output_tokens=12)) == 42
    assert limit.used(Usage(input_tokens=5, output_tokens=7, cache_read_tokens=3)) == 15


def test_the_estimate_covers_system_messages_and_schema() -> None:
    plain = estimate(Request.of("x" * 400, max_tokens=50))
    assert plain.requests == 1
    assert plain.output_tokens == 50
    assert plain.input_tokens >= 100
    with_system = estimate(Request.of("x" * 400, system="y" * 400, max_tokens=50))
    assert with_system.input_tokens >= plain.input_tokens + 100
    schema = {"type": "object", "properties": {"answer": {"type": "string", "enum": ["a" * 200]}}}
    with_schema = estimate(Request.of("x" * 400, max_tokens=50, schema=schema))
    assert with_schema.input_tokens >= plain.input_tokens + 50


# -- refusing what could never run ---------------------------------------------------------------


async def test_a_request_above_the_whole_minute_is_refused_at_once() -> None:
    clock = VirtualClock()
    limit = InputTokenRate(1000, **EXACT, clock=clock)
    with pytest.raises(errors.RequestTooLarge, match="more than the whole limit of 1000"):
        await limit.acquire(Cost(input_tokens=1500))
    assert clock.slept == []


async def test_a_request_above_the_burst_but_within_the_minute_waits_its_turn() -> None:
    clock = VirtualClock()
    limit = InputTokenRate(6000, **EXACT, clock=clock)  # burst 100 tokens, minute 6000
    times = await admissions(
        limit, clock, [Cost(input_tokens=50), Cost(input_tokens=500), Cost(input_tokens=50)]
    )
    # the big one goes alone, once the small one is paid off; the next fits 5 s later
    assert times == pytest.approx([0.0, 0.5, 5.0])


async def test_a_too_large_request_through_a_connection_is_never_sent_nor_retried() -> None:
    clock = VirtualClock()
    fake = FakeProvider()
    llm = connect(fake, concurrency=2, itpm=100, clock=clock)
    with pytest.raises(errors.RequestTooLarge):
        await llm.complete(Request.of("word " * 200))
    assert fake.calls == []
    assert clock.slept == []
    # The slot taken before the refusal was given back: two calls still run at once.
    fake.latency = 0.5  # long enough that both are in flight on a loaded machine
    await asyncio.gather(*(llm.complete(Request.of(str(i))) for i in range(2)))
    assert fake.max_in_flight == 2


# -- learning from the provider ------------------------------------------------------------------


async def test_retry_after_pauses_every_call() -> None:
    clock = VirtualClock()
    limit = RequestRate(6000, **EXACT, clock=clock)
    clock.advance(10.0)
    limit.learn(RateLimitInfo(retry_after=4.0))
    times = await admissions(limit, clock, [ONE, ONE])
    assert times == [14.0, 14.0]
    assert limit.available_at <= 14.0


async def test_a_rate_limited_call_pauses_the_other_calls_on_the_connection() -> None:
    clock = VirtualClock()
    sent_at: list[tuple[str, float]] = []
    refused = False

    async def responder(request: Request) -> str | Exception:
        nonlocal refused
        sent_at.append((request.messages[-1].content, clock.now()))
        if not refused:
            refused = True
            return errors.RateLimited("slow down", status=429, retry_after=3.0)
        return "ok"

    llm = connect(FakeProvider(responder=responder), rpm=6000, clock=clock, retry=Retry(jitter=0.0))

    async def fn(name: str) -> str:
        if name == "second":
            await clock.sleep(1.0)  # starts while the limiter is paused
        return (await llm.complete(Request.of(name))).text

    result = await run(fn, ["first", "second"], clock=clock)
    assert result.values == ["ok", "ok"]
    assert sent_at == [("first", 0.0), ("second", 3.0), ("first", 3.0)]


async def test_headers_showing_fewer_remaining_slow_the_limiter_down() -> None:
    clock = VirtualClock()
    limit = RequestRate(60, **EXACT, clock=clock)
    # someone else has used 20 of this minute's 60 requests
    limit.learn(RateLimitInfo(buckets={"requests": Bucket(limit=60, remaining=40, reset_s=20.0)}))
    times = await admissions(limit, clock, [ONE])
    assert times[0] > 0.0


async def test_without_a_reset_time_the_remaining_count_is_read_out_of_the_minute() -> None:
    clock = VirtualClock()
    limit = RequestRate(60, **EXACT, clock=clock)
    limit.learn(RateLimitInfo(buckets={"requests": Bucket(limit=60, remaining=40, reset_s=None)}))
    assert await admissions(limit, clock, [ONE]) == [pytest.approx(20.0)]


async def test_a_provider_bucket_smaller_than_a_minute_does_not_stall_the_limiter() -> None:
    clock = VirtualClock()
    limit = RequestRate(660, **EXACT, clock=clock)  # 11 a second
    # a provider enforcing over one second: 5 of its 11 left, full again in 0.5 s
    limit.learn(RateLimitInfo(buckets={"requests": Bucket(limit=660, remaining=5, reset_s=0.5)}))
    times = await admissions(limit, clock, [ONE] * 8)
    assert times[:5] == [0.0] * 5  # 0.5 s owed leaves room for 5 of the 11 a second
    assert times[-1] < 1.0  # not the 59 s that "5 of 660 left" would mean for a minute bucket


async def test_headers_showing_more_remaining_change_nothing() -> None:
    clock = VirtualClock()
    limit = RequestRate(60, **EXACT, clock=clock)
    await admissions(limit, clock, [ONE])
    before = limit.available_at
    limit.learn(RateLimitInfo(buckets={"requests": Bucket(limit=60, remaining=60, reset_s=0.0)}))
    assert limit.available_at == before


async def test_headers_for_another_bucket_are_ignored() -> None:
    clock = VirtualClock()
    limit = InputTokenRate(6000, **EXACT, clock=clock)
    limit.learn(RateLimitInfo(buckets={"requests": Bucket(limit=5, remaining=0, reset_s=60.0)}))
    assert await admissions(limit, clock, [Cost(input_tokens=10)]) == [0.0]


async def test_learning_nothing_is_harmless() -> None:
    clock = VirtualClock()
    limit = RequestRate(60, **EXACT, clock=clock)
    limit.learn(None)
    limit.learn(RateLimitInfo())
    assert await admissions(limit, clock, [ONE]) == [0.0]


async def test_a_connection_learns_from_reply_headers() -> None:
    clock = VirtualClock()
    reply_info = RateLimitInfo(buckets={"input_tokens": Bucket(limit=6000, remaining=1000, reset_s=50.0)})

    fake = FakeProvider(responder=lambda r: "ok")
    original = fake._reply

    def reply_with_headers(*args: Any) -> Any:
        from dataclasses import replace

        return replace(original(*args), rate_limits=reply_info)

    fake._reply = reply_with_headers  # type: ignore[method-assign]
    llm = connect(fake, itpm=6000, clock=clock)
    await llm.complete(Request.of("first"))
    await llm.complete(Request.of("second"))
    assert clock.now() > 40.0  # 5000 tokens in use elsewhere: the second call waited


# -- concurrency and composition -----------------------------------------------------------------


async def test_concurrency_caps_calls_in_flight() -> None:
    fake = FakeProvider(latency=0.002)
    llm = connect(fake, concurrency=3)

    async def fn(i: int) -> str:
        return (await llm.complete(Request.of(str(i)))).text

    result = await run(fn, range(12), concurrency=12)
    assert len(result.values) == 12
    assert fake.max_in_flight == 3


async def test_a_failed_call_gives_its_concurrency_slot_back() -> None:
    fake = FakeProvider(error_rate={"bad_request": 1.0})
    llm = connect(fake, concurrency=1)
    for _ in range(3):
        with pytest.raises(errors.BadRequest):
            await llm.complete(Request.of("x"))
    assert len(fake.calls) == 3


class Recorder:
    """A limit that records what happens to it."""

    def __init__(self, name: str, log: list[str]) -> None:
        self.name = name
        self.log = log

    async def acquire(self, cost: Cost) -> None:
        self.log.append(f"acquire {self.name}")

    def release(self, cost: Cost, usage: Usage | None) -> None:
        self.log.append(f"release {self.name} {'with' if usage else 'without'} usage")

    def learn(self, info: RateLimitInfo | None) -> None:
        self.log.append(f"learn {self.name}")


async def test_limits_are_held_in_order_and_released_in_reverse() -> None:
    log: list[str] = []
    llm = connect(FakeProvider(), limits=[Recorder("a", log), Recorder("b", log)])
    await llm.complete(Request.of("x"))
    assert log == [
        "acquire a",
        "acquire b",
        "learn a",
        "learn b",
        "release b with usage",
        "release a with usage",
    ]


async def test_connect_puts_concurrency_first_and_rates_after() -> None:
    log: list[str] = []
    llm = connect(
        FakeProvider(), concurrency=4, rpm=50, itpm=4000, otpm=800, tpm=9000, limits=[Recorder("mine", log)]
    )
    kinds = [type(limit).__name__ for limit in llm.limits.limits]
    assert kinds == [
        "Concurrency",
        "Recorder",
        "RequestRate",
        "InputTokenRate",
        "OutputTokenRate",
        "TokenRate",
    ]


async def test_a_rate_is_charged_only_once_the_concurrency_slot_is_held() -> None:
    clock = VirtualClock()
    log: list[str] = []

    class SlowFake(FakeProvider):
        async def complete(self, request: Request) -> Any:
            log.append(f"send {request.messages[-1].content} at {clock.now():g}")
            await clock.sleep(5.0)
            return await super().complete(request)

    llm = connect(SlowFake(), limits=[Concurrency(1), Recorder("rate", log)], clock=clock)

    async def fn(name: str) -> str:
        return (await llm.complete(Request.of(name))).text

    await run(fn, ["a", "b"], concurrency=2, clock=clock)
    assert log[:4] == ["acquire rate", "send a at 0", "learn rate", "release rate with usage"]
    assert log[4:6] == ["acquire rate", "send b at 5"]


async def test_limits_without_any_limit_are_falsy() -> None:
    assert not Limits()
    assert Limits([Concurrency(1)])
