"""A Connection: a provider with limits, the one retry layer, a call timeout and accounting."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest

from quorum import errors
from quorum.engine import Budget, Connection, Retry, Status, connect, run
from quorum.llm import FakeProvider, Provider, Request
from quorum.testing.clock import VirtualClock


def test_connect_resolves_a_model_string() -> None:
    llm = connect("fake/scripted-model")
    assert isinstance(llm, Connection)
    assert isinstance(llm.provider, FakeProvider)
    assert (llm.name, llm.model) == ("fake", "scripted-model")
    assert llm.capabilities == llm.provider.capabilities
    assert "fake/scripted-model" in repr(llm)


def test_connect_wraps_a_provider_object_and_keeps_a_connection() -> None:
    fake = FakeProvider()
    llm = connect(fake)
    assert llm.provider is fake
    assert connect(llm) is llm


def test_connect_without_a_model_takes_the_configured_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QUORUM_MODEL", "fake/from-env")
    assert connect().model == "from-env"


def test_a_connection_is_itself_a_provider() -> None:
    assert isinstance(connect(FakeProvider()), Provider)


def test_unknown_providers_and_options_raise() -> None:
    with pytest.raises(errors.UnknownProvider, match="known providers"):
        connect("nosuch/model")
    with pytest.raises(errors.ConfigError):
        connect("not a model string")
    with pytest.raises((errors.ConfigError, TypeError)):
        connect("fake", colour="blue")


async def test_the_connection_defaults_retry_transient_failures() -> None:
    clock = VirtualClock()
    fake = FakeProvider(error_rate={"overloaded": 0.5}, seed=1)
    llm = connect(fake, clock=clock)
    assert llm.retry == Retry()
    for i in range(10):
        await llm.complete(Request.of(str(i)))
    assert len(fake.calls) > 10
    assert all(0 < s <= 8.0 for s in clock.slept)


async def test_a_call_timeout_names_the_model_and_cancels_the_call() -> None:
    fake = FakeProvider(model="slowpoke", latency=30.0)
    llm = connect(fake, timeout=0.005, retry=Retry(attempts=1))
    with pytest.raises(errors.Timeout, match=r"fake/slowpoke gave no answer within 0\.005s"):
        await llm.complete(Request.of("hello"))
    assert fake.cancelled == 1


async def test_calls_are_refused_once_the_run_budget_is_spent() -> None:
    fake = FakeProvider(responder=lambda r: "answer")
    llm = connect(fake)

    async def fn(_: int) -> str:
        for _ in range(10):
            await llm.complete(Request.of("question"))
        return "never"

    result = await run(fn, [0], budget=Budget(tokens=8))
    outcome = result.outcomes[0]
    assert outcome.status is Status.ERROR
    assert isinstance(outcome.error, errors.BudgetExceeded)
    assert len(fake.calls) == 2  # 4 tokens a call: the third was refused before it was sent
    assert outcome.calls == 2


async def test_limits_are_shared_by_every_run_using_the_connection() -> None:
    fake = FakeProvider(latency=0.002)
    llm = connect(fake, concurrency=2)

    async def fn(i: int) -> str:
        return (await llm.complete(Request.of(str(i)))).text

    await asyncio.gather(run(fn, range(6), concurrency=6), run(fn, range(6), concurrency=6))
    assert fake.max_in_flight == 2
    assert len(fake.calls) == 12


async def test_aclose_closes_the_provider() -> None:
    closed: list[bool] = []

    class Closing(FakeProvider):
        async def aclose(self) -> None:
            closed.append(True)

    async with connect(Closing()) as llm:
        await llm.complete(Request.of("x"))
    assert closed == [True]
    await connect(FakeProvider()).aclose()  # a provider without aclose is fine


async def test_debug_log_records_request_and_reply_without_keys(caplog: pytest.LogCaptureFixture) -> None:
    llm = connect(FakeProvider(responder=lambda r: "the reply text"))
    key = "sk-ant-api03-" + "A" * 40
    with caplog.at_level(logging.DEBUG, logger="quorum.calls"):
        await llm.complete(Request.of(f"my key is {key}, please ignore"))
    text = caplog.text
    assert "request to fake/fake" in text
    assert "reply from fake/fake" in text
    assert "the reply text" in text
    assert key not in text
    assert "[REDACTED]" in text


async def test_retries_are_logged_at_info(caplog: pytest.LogCaptureFixture) -> None:
    clock = VirtualClock()
    answers: list[Any] = [errors.ServerError("boom", status=500), "ok"]
    llm = connect(FakeProvider(responder=lambda r: answers.pop(0)), clock=clock)
    with caplog.at_level(logging.INFO, logger="quorum.calls"):
        await llm.complete(Request.of("x"))
    assert "retrying fake/fake" in caplog.text
    assert "ServerError: boom" in caplog.text


async def test_nothing_is_logged_at_debug_unless_asked(caplog: pytest.LogCaptureFixture) -> None:
    llm = connect(FakeProvider())
    with caplog.at_level(logging.INFO, logger="quorum.calls"):
        await llm.complete(Request.of("x"))
    assert caplog.records == []


async def test_an_answer_that_breaks_its_schema_is_charged_and_not_retried() -> None:
    from quorum import Budget, FakeProvider, Request, run
    from quorum.errors import InvalidReply
    from quorum.llm import Price

    fake = FakeProvider(rules=[{"match": ".", "reply": "not json"}], price=Price(1.0, 1.0, 0.1, 1.25))
    budget = Budget(tokens=10_000)
    result = await run(connect(fake).complete, [Request.of("hi", schema={"type": "object"})], budget=budget)
    outcome = result.outcomes[0]
    assert isinstance(outcome.error, InvalidReply)
    assert outcome.attempts == 1  # a broken answer is not retried
    assert outcome.calls == 1
    assert outcome.usage.output_tokens > 0
    assert outcome.cost is not None
    assert budget.spent_tokens == outcome.usage.total_tokens


async def test_time_in_calls_leaves_out_waiting_for_a_free_slot() -> None:
    from quorum import FakeProvider, Request, run

    llm = connect(FakeProvider(latency=0.05), concurrency=1)  # one call at a time
    result = await run(llm.complete, [Request.of(f"q{i}") for i in range(4)], concurrency=4)
    waited = sum(o.duration for o in result.outcomes)  # includes queueing: about 0.05+0.10+0.15+0.20
    assert result.summary.busy_s < 0.75 * waited
    assert result.summary.busy_s == pytest.approx(sum(o.call_s for o in result.outcomes))
    assert result.summary.time_saved_s < 0.05  # one at a time saves nothing, and says so
