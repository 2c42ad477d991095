"""The one retry layer: what is retried, how long it waits, and when it gives up.

Every wait goes through a ``VirtualClock``, so the tests assert the exact sleeps that were
requested and nothing really waits.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from typing import Any

import pytest

from quorum import errors
from quorum.engine import EventKind, Retry, connect, is_not_permanent, is_transient, run
from quorum.llm import FakeProvider, RateLimitInfo, Request
from quorum.testing.clock import VirtualClock


class FixedRandom(random.Random):
    """``random()`` always returns ``value``: jitter made exact."""

    def __init__(self, value: float) -> None:
        super().__init__(0)
        self.value = value

    def random(self) -> float:
        return self.value


class Script:
    """A fake's responder that plays the given answers in turn, then answers "ok"."""

    def __init__(self, answers: Sequence[Exception | str]) -> None:
        self.answers = list(answers)
        self.calls = 0

    def __call__(self, request: Request) -> Exception | str:
        self.calls += 1
        return self.answers.pop(0) if self.answers else "ok"


def scripted(answers: Sequence[Exception | str], retry: Retry) -> tuple[Any, Script, VirtualClock]:
    clock = VirtualClock()
    script = Script(answers)
    llm = connect(FakeProvider(responder=script), retry=retry, clock=clock)
    return llm, script, clock


NO_JITTER = Retry(attempts=5, base_delay=0.5, max_delay=8.0, jitter=0.0)
REQUEST = Request.of("hello", max_tokens=8)

TRANSIENT: list[Callable[[], errors.ProviderError]] = [
    lambda: errors.RateLimited("429", status=429),
    lambda: errors.Overloaded("overloaded", status=529),
    lambda: errors.ServerError("internal", status=500),
    lambda: errors.ServerError("bad gateway", status=502),
    lambda: errors.ServerError("unavailable", status=503),
    lambda: errors.ServerError("request timeout", status=408),
    lambda: errors.ServerError("conflict", status=409),
    lambda: errors.Timeout("no answer"),
    lambda: errors.ConnectionFailed("connection reset"),
]
PERMANENT: list[Callable[[], errors.ProviderError]] = [
    lambda: errors.BadRequest("bad", status=400),
    lambda: errors.BadRequest("too large", status=413),
    lambda: errors.ContextOverflow("does not fit", status=400),
    lambda: errors.AuthError("bad key", status=401),
    lambda: errors.AuthError("forbidden", status=403),
    lambda: errors.NotFound("no such model", status=404),
    lambda: errors.InvalidReply("not JSON"),
]


@pytest.mark.parametrize("make", TRANSIENT)
async def test_transient_failures_are_retried(make: Callable[[], errors.ProviderError]) -> None:
    llm, script, clock = scripted([make(), make()], NO_JITTER)
    reply = await llm.complete(REQUEST)
    assert reply.text == "ok"
    assert script.calls == 3
    assert clock.slept == [0.5, 1.0]


@pytest.mark.parametrize("make", PERMANENT)
async def test_permanent_failures_are_never_retried(make: Callable[[], errors.ProviderError]) -> None:
    failure = make()
    llm, script, clock = scripted([failure], NO_JITTER)
    with pytest.raises(type(failure)) as caught:
        await llm.complete(REQUEST)
    assert caught.value is failure
    assert script.calls == 1
    assert clock.slept == []


@pytest.mark.parametrize(
    "failure",
    [errors.RequestTooLarge("huge"), errors.BudgetExceeded("spent"), errors.ConfigError("typo")],
)
async def test_quorum_errors_that_are_not_provider_failures_are_not_retried(failure: Exception) -> None:
    llm, script, clock = scripted([failure], NO_JITTER)
    with pytest.raises(type(failure)):
        await llm.complete(REQUEST)
    assert script.calls == 1
    assert clock.slept == []


async def test_a_foreign_exception_escapes_without_retry() -> None:
    llm, script, _clock = scripted([ValueError("a bug in a responder")], NO_JITTER)
    with pytest.raises(ValueError, match="a bug"):
        await llm.complete(REQUEST)
    assert script.calls == 1


def test_classifiers() -> None:
    for make in TRANSIENT:
        assert is_transient(make())
        assert is_not_permanent(make())
    for make in PERMANENT:
        assert not is_transient(make())
        assert not is_not_permanent(make())
    assert not is_transient(ValueError("x"))
    assert is_not_permanent(ValueError("x"))  # the chapter's RETRY retries arbitrary failures
    assert not is_not_permanent(errors.ConfigError("x"))
    assert not is_not_permanent(KeyboardInterrupt())


async def test_backoff_doubles_up_to_the_cap() -> None:
    retry = Retry(attempts=8, base_delay=0.5, multiplier=2.0, max_delay=8.0, jitter=0.0, deadline=None)
    llm, script, clock = scripted([errors.ServerError("x", status=500)] * 7, retry)
    await llm.complete(REQUEST)
    assert clock.slept == [0.5, 1.0, 2.0, 4.0, 8.0, 8.0, 8.0]
    assert script.calls == 8


@pytest.mark.parametrize(("draw", "share"), [(0.0, 1.0), (1.0, 0.75), (0.5, 0.875)])
async def test_jitter_shortens_each_wait_by_at_most_its_share(draw: float, share: float) -> None:
    retry = Retry(attempts=4, base_delay=0.5, jitter=0.25, rng=FixedRandom(draw))
    llm, _script, clock = scripted([errors.Overloaded("x", status=529)] * 3, retry)
    await llm.complete(REQUEST)
    assert clock.slept == pytest.approx([0.5 * share, 1.0 * share, 2.0 * share])


async def test_random_jitter_stays_within_its_bounds_and_varies() -> None:
    retry = Retry(attempts=4, base_delay=1.0, jitter=0.25, rng=random.Random(7))
    waits: list[float] = []
    for _ in range(30):
        waits.extend(retry.backoff(n) / 2 ** (n - 1) for n in (1, 2, 3))
    assert all(0.75 <= w <= 1.0 for w in waits)
    assert len(set(waits)) > 10  # really random, not a fixed factor


async def test_retry_after_replaces_the_backoff() -> None:
    llm, _script, clock = scripted(
        [errors.RateLimited("slow down", status=429, retry_after=7.0), errors.ServerError("x")],
        NO_JITTER,
    )
    await llm.complete(REQUEST)
    assert clock.slept == [7.0, 1.0]  # the advice first; the second failure backs off normally


async def test_retry_after_from_headers_on_any_error_is_honoured() -> None:
    advised = errors.Overloaded("busy", status=529, rate_limits=RateLimitInfo(retry_after=2.5))
    llm, _script, clock = scripted([advised], NO_JITTER)
    await llm.complete(REQUEST)
    assert clock.slept == [2.5]


async def test_a_zero_retry_after_falls_back_to_the_backoff() -> None:
    llm, _script, clock = scripted([errors.RateLimited("now", status=429, retry_after=0.0)], NO_JITTER)
    await llm.complete(REQUEST)
    assert clock.slept == [0.5]


async def test_a_retry_after_beyond_the_deadline_gives_up_at_once() -> None:
    retry = Retry(attempts=5, deadline=60.0)
    failure = errors.RateLimited("come back in an hour", status=429, retry_after=3600.0)
    llm, script, clock = scripted([failure], retry)
    with pytest.raises(errors.RateLimited):
        await llm.complete(REQUEST)
    assert script.calls == 1
    assert clock.slept == []


async def test_attempts_bound_every_try_the_first_included() -> None:
    retry = Retry(attempts=3, base_delay=1.0, jitter=0.0)
    failures = [errors.ServerError(f"failure {n}", status=500) for n in range(5)]
    llm, script, clock = scripted(failures, retry)
    with pytest.raises(errors.ServerError, match="failure 2"):  # the last failure is raised
        await llm.complete(REQUEST)
    assert script.calls == 3
    assert clock.slept == [1.0, 2.0]


async def test_the_total_deadline_bounds_the_retries() -> None:
    retry = Retry(attempts=100, base_delay=1.0, max_delay=8.0, jitter=0.0, deadline=20.0)
    llm, script, clock = scripted([errors.ConnectionFailed("reset")] * 100, retry)
    with pytest.raises(errors.ConnectionFailed):
        await llm.complete(REQUEST)
    # 1 + 2 + 4 + 8 = 15 s; another 8 s would end after the 20 s deadline
    assert clock.slept == [1.0, 2.0, 4.0, 8.0]
    assert script.calls == 5


async def test_a_call_timeout_is_a_transient_failure() -> None:
    clock = VirtualClock()
    fake = FakeProvider(latency=30.0)
    llm = connect(fake, timeout=0.005, retry=Retry(attempts=2, jitter=0.0), clock=clock)
    with pytest.raises(errors.Timeout, match=r"within 0\.005s"):
        await llm.complete(REQUEST)
    assert len(fake.calls) == 2
    assert fake.cancelled == 2
    assert clock.slept == [0.5]


def test_retry_rejects_nonsense() -> None:
    with pytest.raises(errors.ConfigError, match="first try"):
        Retry(attempts=0)
    with pytest.raises(errors.ConfigError, match="jitter"):
        Retry(jitter=1.5)


def test_delay_is_none_when_retrying_cannot_help() -> None:
    retry = Retry(attempts=3, jitter=0.0)
    assert retry.delay(1, errors.BadRequest("x"), 0.0) is None
    assert retry.delay(3, errors.ServerError("x"), 0.0) is None
    assert retry.delay(1, errors.ServerError("x"), 0.0) == 0.5
    assert retry.delay(2, errors.ServerError("x"), 299.5) is None  # 1 s would pass 300 s


async def test_retries_inside_a_task_are_reported_as_events() -> None:
    events: list[tuple[EventKind, int | None, float | None, str | None]] = []
    llm, _script, clock = scripted([errors.Overloaded("busy", status=529)], NO_JITTER)

    async def fn(_: int) -> str:
        return (await llm.complete(REQUEST)).text

    result = await run(
        fn, [0], clock=clock, on_event=lambda e: events.append((e.kind, e.attempt, e.delay, e.error))
    )
    assert result.outcomes[0].attempts == 2
    retries = [e for e in events if e[0] is EventKind.RETRY]
    assert retries == [(EventKind.RETRY, 1, 0.5, "Overloaded: busy")]


async def test_the_sdk_defaults_match_the_documented_schedule() -> None:
    retry = Retry()
    assert (retry.attempts, retry.base_delay, retry.max_delay, retry.jitter) == (4, 0.5, 8.0, 0.25)
    assert retry.retry_on is is_transient
