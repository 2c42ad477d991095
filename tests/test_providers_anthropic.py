"""The Anthropic provider against the emulator, through the real ``anthropic`` SDK."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any

import anthropic
import httpx2
import pytest

from quorum import errors
from quorum.llm.anthropic import AnthropicProvider
from quorum.llm.http_errors import Boundary, SdkErrors
from quorum.llm.types import Request
from quorum.testing.emulator import Emulator
from scripts import ERROR_RULES

KEY = "sk-ant-test-SECRET123456"
MODEL = "claude-haiku-4-5"
SCHEMA = {
    "type": "object",
    "properties": {"decision": {"type": "string", "enum": ["approve", "reject"]}},
    "required": ["decision"],
}
RULES = [
    {"match": "greet", "reply": "Hello from the script."},
    {"match": "judge", "data": {"decision": "reject"}},
    {"match": "offschema", "data": {"decision": "maybe"}},
    {"match": "chatty", "reply": "I will not use the tool."},
    {"match": "long", "data": {"decision": "reject", "why": "because " * 100}},
    *ERROR_RULES,
]


@pytest.fixture
async def emu() -> AsyncIterator[Emulator]:
    async with Emulator(script=RULES, rpm=1000, itpm=1_000_000) as emulator:
        yield emulator


@pytest.fixture
async def llm(emu: Emulator) -> AsyncIterator[AnthropicProvider]:
    provider = AnthropicProvider(MODEL, api_key=KEY, base_url=emu.anthropic_base_url, timeout=5.0)
    yield provider
    await provider.aclose()


async def failure(llm: AnthropicProvider, prompt: str, **options: Any) -> errors.ProviderError:
    with pytest.raises(errors.ProviderError) as caught:
        await llm.complete(Request.of(prompt, **options))
    error = caught.value
    assert "SECRET123456" not in str(error)
    assert "SECRET123456" not in repr(error)
    assert "\n" not in str(error)
    return error


async def test_text_reply_with_usage_cost_and_rate_limits(llm: AnthropicProvider) -> None:
    reply = await llm.complete(Request.of("greet me", system="Be kind."))
    assert reply.text == "Hello from the script."
    assert reply.model == MODEL
    assert reply.stop_reason == "end_turn"
    assert reply.usage.input_tokens > 0
    assert reply.usage.output_tokens > 0
    assert reply.cost is not None
    assert reply.cost > 0
    assert reply.latency_s > 0
    assert reply.rate_limits is not None
    assert reply.rate_limits.buckets["requests"].limit == 1000
    assert reply.rate_limits.buckets["input_tokens"].remaining is not None


async def test_structured_answer_comes_from_the_forced_tool(llm: AnthropicProvider, emu: Emulator) -> None:
    reply = await llm.complete(Request.of("judge this", schema=SCHEMA, schema_name="verdict"))
    assert reply.data == {"decision": "reject"}
    assert reply.stop_reason == "tool_use"
    _, body = emu.recent[-1]
    assert body["tool_choice"] == {"type": "tool", "name": "verdict"}
    assert body["tools"][0]["input_schema"] == SCHEMA


@pytest.mark.parametrize(
    ("prompt", "words"),
    [("offschema", "outside the requested schema"), ("chatty", "without calling"), ("long", "cut off")],
)
async def test_unusable_structured_answers_are_invalid_replies(
    llm: AnthropicProvider, prompt: str, words: str
) -> None:
    error = await failure(llm, prompt, schema=SCHEMA, max_tokens=40)
    assert isinstance(error, errors.InvalidReply)
    assert words in str(error)
    assert error.provider == "anthropic"


async def test_text_answer_to_a_structured_request_is_kept(llm: AnthropicProvider) -> None:
    error = await failure(llm, "chatty", schema=SCHEMA)
    assert isinstance(error, errors.InvalidReply)
    assert error.text == "I will not use the tool."


async def test_streaming_calls_on_first_byte_once(llm: AnthropicProvider) -> None:
    calls: list[int] = []
    reply = await llm.complete(Request.of("greet", on_first_byte=lambda: calls.append(1)))
    assert calls == [1]
    assert reply.text == "Hello from the script."
    assert reply.usage.output_tokens > 0
    assert reply.rate_limits is not None
    assert reply.rate_limits.buckets["requests"].limit == 1000


async def test_streamed_structured_answer_is_assembled(llm: AnthropicProvider) -> None:
    calls: list[int] = []
    request = Request.of("judge", schema=SCHEMA, on_first_byte=lambda: calls.append(1))
    reply = await llm.complete(request)
    assert reply.data == {"decision": "reject"}
    assert calls == [1]


async def test_shared_prefix_goes_first_and_carries_the_breakpoint(
    llm: AnthropicProvider, emu: Emulator
) -> None:
    document = "The document under review. " * 40
    replies = [
        await llm.complete(Request.of("q", prefix=document, system=role, cache_prefix=True))
        for role in ("You are a lawyer.", "You are an engineer.")
    ]
    _, body = emu.recent[-1]
    assert body["system"][0] == {"type": "text", "text": document, "cache_control": {"type": "ephemeral"}}
    assert body["system"][1] == {"type": "text", "text": "You are an engineer."}
    assert replies[0].usage.cache_write_tokens > 0
    assert replies[1].usage.cache_read_tokens == replies[0].usage.cache_write_tokens


async def test_cache_prefix_writes_then_reads(llm: AnthropicProvider, emu: Emulator) -> None:
    system = "You are a meticulous reviewer of pull requests. " * 30
    first = await llm.complete(Request.of("review a", system=system, cache_prefix=True))
    second = await llm.complete(Request.of("review b", system=system, cache_prefix=True))
    assert first.usage.cache_write_tokens > 0
    assert second.usage.cache_read_tokens == first.usage.cache_write_tokens
    assert second.usage.cache_write_tokens == 0
    assert second.cost is not None
    assert first.cost is not None
    assert second.cost < first.cost
    _, body = emu.recent[-1]
    assert body["system"][0]["cache_control"] == {"type": "ephemeral"}


async def test_request_fields_reach_the_wire(llm: AnthropicProvider, emu: Emulator) -> None:
    await llm.complete(Request.of("greet", system="S", stop=("END",), max_tokens=77))
    _, body = emu.recent[-1]
    assert body["system"] == "S"
    assert body["stop_sequences"] == ["END"]
    assert body["max_tokens"] == 77
    assert body["model"] == MODEL


async def test_temperature_is_not_sent_and_the_loss_is_logged(
    llm: AnthropicProvider, emu: Emulator, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.DEBUG, logger="quorum.llm.anthropic"):
        reply = await llm.complete(Request.of("greet", temperature=0.7))
        await llm.complete(Request.of("greet", temperature=0.9))
    assert reply.text == "Hello from the script."
    assert "temperature" not in emu.recent[-1][1]
    assert len([r for r in caplog.records if "temperature" in r.message]) == 1


# --- errors ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("prompt", "cls", "status"),
    [
        ("e529", errors.Overloaded, 529),
        ("e500", errors.ServerError, 500),
        ("e400", errors.BadRequest, 400),
        ("e401", errors.AuthError, 401),
        ("e404", errors.NotFound, 404),
        ("ereset", errors.ConnectionFailed, None),
        ("ehang", errors.Timeout, None),
        ("ebroken", errors.MalformedReply, None),
    ],
)
async def test_every_failure_maps_to_its_class(
    llm: AnthropicProvider,
    emu: Emulator,
    prompt: str,
    cls: type[errors.ProviderError],
    status: int | None,
) -> None:
    if prompt == "ehang":  # the one case that lasts until the client's timeout
        llm = AnthropicProvider(MODEL, api_key=KEY, base_url=emu.anthropic_base_url, timeout=0.2)
    error = await failure(llm, prompt)
    assert type(error) is cls
    assert error.status == status
    assert error.provider == "anthropic"
    assert str(error).startswith("anthropic: ")


async def test_rate_limited_carries_retry_after_and_headers(llm: AnthropicProvider) -> None:
    error = await failure(llm, "e429")
    assert isinstance(error, errors.RateLimited)
    assert error.retry_after == 1.0
    assert error.status == 429
    assert error.rate_limits is not None
    assert error.rate_limits.buckets["requests"].limit == 1000
    assert "retry after 1 s" in str(error)


async def test_enforced_limit_is_rate_limited_with_the_wait() -> None:
    async with Emulator(rpm=1) as emu:
        llm = AnthropicProvider(MODEL, api_key=KEY, base_url=emu.anthropic_base_url)
        await llm.complete(Request.of("one"))
        error = await failure(llm, "two")
        await llm.aclose()
    assert isinstance(error, errors.RateLimited)
    assert error.retry_after is not None
    assert 58 <= error.retry_after <= 60  # one request a minute
    assert error.rate_limits is not None
    assert error.rate_limits.buckets["requests"].remaining == 0


@pytest.mark.parametrize(
    ("kind", "cls"),
    [
        ("429", errors.RateLimited),
        ("529", errors.Overloaded),
        ("500", errors.ServerError),
        ("reset", errors.ConnectionFailed),
        ("hang", errors.Timeout),
        ("malformed", errors.MalformedReply),
    ],
)
@pytest.mark.parametrize("stream", [False, True])
async def test_injected_failures_map_streamed_or_not(
    kind: str, cls: type[errors.ProviderError], stream: bool
) -> None:
    async with Emulator(errors={kind: 1.0}) as emu:
        llm = AnthropicProvider(
            MODEL, api_key=KEY, base_url=emu.anthropic_base_url, timeout=0.2 if kind == "hang" else 5.0
        )
        hook = (lambda: None) if stream else None
        error = await failure(llm, "hi", on_first_byte=hook)
        await llm.aclose()
    assert type(error) is cls


async def test_auth_failure_names_the_key_variable(llm: AnthropicProvider) -> None:
    error = await failure(llm, "e401")
    assert "ANTHROPIC_API_KEY" in str(error)


def test_mid_stream_error_event_maps_by_its_type() -> None:
    request = httpx2.Request("POST", "http://x/v1/messages")
    response = httpx2.Response(200, request=request)
    body = {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}
    exc = anthropic.APIStatusError("stream error", response=response, body=body)
    mapped = _boundary().map(exc)
    assert isinstance(mapped, errors.Overloaded)
    assert mapped.status == 529


def test_prompt_too_long_is_a_context_overflow() -> None:
    request = httpx2.Request("POST", "http://x/v1/messages")
    response = httpx2.Response(400, request=request)
    body = {
        "type": "error",
        "error": {"type": "invalid_request_error", "message": "prompt is too long: 210000 tokens > 200000"},
    }
    exc = anthropic.BadRequestError("x", response=response, body=body)
    assert isinstance(_boundary().map(exc), errors.ContextOverflow)


def test_unknown_exceptions_are_not_mapped() -> None:
    assert _boundary().map(KeyError("x")) is None


def _boundary() -> Boundary:
    sdk = SdkErrors(
        anthropic.APIStatusError,
        anthropic.APITimeoutError,
        anthropic.APIConnectionError,
        anthropic.APIResponseValidationError,
    )
    return Boundary("anthropic", sdk, "ANTHROPIC_API_KEY", "http://x", 1.0)


# --- configuration --------------------------------------------------------------------


def test_missing_key_is_one_line_naming_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    with pytest.raises(errors.MissingKey) as caught:
        AnthropicProvider()
    message = str(caught.value)
    assert "\n" not in message
    assert "export ANTHROPIC_API_KEY=" in message
    assert "--model local" in message


def test_unknown_option_names_it_and_the_allowed_ones() -> None:
    with pytest.raises(errors.ConfigError, match=r"temprature.*allowed: model, api_key"):
        AnthropicProvider(api_key=KEY, temprature=0.5)


async def test_environment_supplies_key_and_base_url(emu: Emulator, monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in emu.env().items():
        monkeypatch.setenv(name, value)
    llm = AnthropicProvider(MODEL)
    reply = await llm.complete(Request.of("greet"))
    await llm.aclose()
    assert reply.text == "Hello from the script."


def test_key_never_shows_in_repr() -> None:
    llm = AnthropicProvider(api_key=KEY, base_url="http://127.0.0.1:9")
    assert "SECRET123456" not in repr(llm)
    assert "claude-sonnet-5-5" in repr(llm)
    assert llm.capabilities.supports_cache
    assert llm.capabilities.max_context == 200_000
