"""The OpenAI provider against the emulator, through the real ``openai`` SDK."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from quorum import errors
from quorum.llm.openai import OpenAIProvider
from quorum.llm.types import Request
from quorum.testing.emulator import Emulator
from scripts import ERROR_RULES

KEY = "sk-test-SECRET1234567890"
SCHEMA = {
    "type": "object",
    "properties": {"decision": {"type": "string", "enum": ["approve", "reject"]}},
    "required": ["decision"],
    "additionalProperties": False,
}
RULES = [
    {"match": "greet", "reply": "Hello from the script."},
    {"match": "judge", "data": {"decision": "reject"}},
    {"match": "offschema", "data": {"decision": "maybe"}},
    {"match": "prose", "reply": "Sure! I think you should approve it."},
    {"match": "long", "data": {"decision": "reject", "why": "because " * 100}},
    *ERROR_RULES,
]


@pytest.fixture
async def emu() -> AsyncIterator[Emulator]:
    async with Emulator(script=RULES, rpm=600, itpm=100_000) as emulator:
        yield emulator


@pytest.fixture
async def llm(emu: Emulator) -> AsyncIterator[OpenAIProvider]:
    provider = OpenAIProvider(api_key=KEY, base_url=emu.openai_base_url, timeout=5.0)
    yield provider
    await provider.aclose()


async def failure(llm: OpenAIProvider, prompt: str, **options: Any) -> errors.ProviderError:
    with pytest.raises(errors.ProviderError) as caught:
        await llm.complete(Request.of(prompt, **options))
    error = caught.value
    assert "SECRET1234567890" not in str(error)
    assert "SECRET1234567890" not in repr(error)
    assert "\n" not in str(error)
    return error


async def test_text_reply_with_usage_cost_and_rate_limits(llm: OpenAIProvider) -> None:
    reply = await llm.complete(Request.of("greet me", system="Be kind."))
    assert reply.text == "Hello from the script."
    assert reply.model == "gpt-4o-mini"
    assert reply.stop_reason == "stop"
    assert reply.usage.input_tokens > 0
    assert reply.usage.output_tokens > 0
    assert reply.cost is not None
    assert reply.cost > 0
    assert reply.rate_limits is not None
    assert reply.rate_limits.buckets["requests"].limit == 600
    assert reply.rate_limits.buckets["tokens"].limit == 100_000


async def test_structured_answer_through_json_schema(llm: OpenAIProvider, emu: Emulator) -> None:
    reply = await llm.complete(Request.of("judge", schema=SCHEMA, schema_name="verdict"))
    assert reply.data == {"decision": "reject"}
    _, body = emu.recent[-1]
    assert body["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "verdict", "schema": SCHEMA, "strict": True},
    }


@pytest.mark.parametrize(
    ("prompt", "words"),
    [("offschema", "outside the requested schema"), ("prose", "not JSON"), ("long", "cut off")],
)
async def test_unusable_structured_answers_are_invalid_replies(
    llm: OpenAIProvider, prompt: str, words: str
) -> None:
    error = await failure(llm, prompt, schema=SCHEMA, max_tokens=40)
    assert isinstance(error, errors.InvalidReply)
    assert words in str(error)
    assert error.provider == "openai"
    assert error.text


async def test_streaming_calls_on_first_byte_once(llm: OpenAIProvider) -> None:
    calls: list[int] = []
    reply = await llm.complete(Request.of("greet", on_first_byte=lambda: calls.append(1)))
    assert calls == [1]
    assert reply.text == "Hello from the script."
    assert reply.stop_reason == "stop"
    assert reply.usage.output_tokens > 0
    assert reply.rate_limits is not None
    assert reply.rate_limits.buckets["requests"].limit == 600


async def test_streamed_structured_answer_is_assembled(llm: OpenAIProvider) -> None:
    request = Request.of("judge", schema=SCHEMA, on_first_byte=lambda: None)
    reply = await llm.complete(request)
    assert reply.data == {"decision": "reject"}


async def test_cached_prompt_tokens_are_reads_not_input(llm: OpenAIProvider) -> None:
    document = "A long shared document. " * 250  # past OpenAI's 1024-token minimum
    first = await llm.complete(Request.of("greet", prefix=document, system="Summarise."))
    second = await llm.complete(Request.of("greet", prefix=document, system="Summarise."))
    assert first.usage.cache_read_tokens == 0
    assert second.usage.cache_read_tokens > 1000
    assert second.usage.prompt_tokens == first.usage.prompt_tokens
    assert second.usage.input_tokens == first.usage.input_tokens - second.usage.cache_read_tokens


@pytest.mark.parametrize(
    ("model", "field"),
    [
        ("gpt-4o-mini", "max_tokens"),
        ("gpt-5-mini", "max_completion_tokens"),
        ("o3", "max_completion_tokens"),
        ("o4-mini", "max_completion_tokens"),
    ],
)
async def test_token_budget_field_depends_on_the_model(emu: Emulator, model: str, field: str) -> None:
    llm = OpenAIProvider(model, api_key=KEY, base_url=emu.openai_base_url)
    await llm.complete(Request.of("greet", max_tokens=33))
    await llm.aclose()
    _, body = emu.recent[-1]
    other = ({"max_tokens", "max_completion_tokens"} - {field}).pop()
    assert body[field] == 33
    assert other not in body


async def test_request_fields_reach_the_wire(llm: OpenAIProvider, emu: Emulator) -> None:
    await llm.complete(Request.of("greet", system="S", prefix="P", stop=("END",), temperature=0.3, seed=7))
    _, body = emu.recent[-1]
    assert body["messages"][0] == {"role": "system", "content": "P\n\nS"}
    assert body["messages"][1] == {"role": "user", "content": "greet"}
    assert body["stop"] == ["END"]
    assert body["temperature"] == 0.3
    assert body["seed"] == 7


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
    llm: OpenAIProvider,
    emu: Emulator,
    prompt: str,
    cls: type[errors.ProviderError],
    status: int | None,
) -> None:
    if prompt == "ehang":  # the one case that lasts until the client's timeout
        llm = OpenAIProvider(api_key=KEY, base_url=emu.openai_base_url, timeout=0.2)
    error = await failure(llm, prompt)
    assert type(error) is cls
    assert error.status == status
    assert error.provider == "openai"


async def test_rate_limited_carries_retry_after_and_headers(llm: OpenAIProvider) -> None:
    error = await failure(llm, "e429")
    assert isinstance(error, errors.RateLimited)
    assert error.retry_after == 1.0
    assert error.rate_limits is not None
    assert error.rate_limits.buckets["requests"].limit == 600


@pytest.mark.parametrize(
    ("kind", "cls"),
    [
        ("429", errors.RateLimited),
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
        llm = OpenAIProvider(
            api_key=KEY, base_url=emu.openai_base_url, timeout=0.2 if kind == "hang" else 5.0
        )
        hook = (lambda: None) if stream else None
        error = await failure(llm, "hi", on_first_byte=hook)
        await llm.aclose()
    assert type(error) is cls


# --- configuration --------------------------------------------------------------------


def test_missing_key_against_openai_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    with pytest.raises(errors.MissingKey) as caught:
        OpenAIProvider()
    message = str(caught.value)
    assert "\n" not in message
    assert "export OPENAI_API_KEY=" in message


async def test_local_servers_need_no_key(emu: Emulator, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.setenv("OPENAI_BASE_URL", emu.openai_base_url)
    llm = OpenAIProvider("llama-3.2-1b")
    reply = await llm.complete(Request.of("greet"))
    await llm.aclose()
    assert reply.text == "Hello from the script."
    assert reply.cost is None  # an unknown model's price is unknown, never $0


def test_unknown_option_names_it_and_the_allowed_ones() -> None:
    with pytest.raises(errors.ConfigError, match=r"organisation.*allowed: model, api_key"):
        OpenAIProvider(api_key=KEY, organisation="x")


def test_key_never_shows_in_repr() -> None:
    llm = OpenAIProvider(api_key=KEY)
    assert "SECRET1234567890" not in repr(llm)
    assert "gpt-4o-mini" in repr(llm)
    assert llm.capabilities.supports_schema
