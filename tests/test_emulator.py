"""The emulator, through the official SDKs, unmodified: what they send, it must understand;
what it sends, they must parse, including their errors."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from typing import Any

import anthropic
import httpx2
import openai
import pytest

from quorum.errors import ConfigError
from quorum.testing.emulator import DUMMY_KEY, Emulator, parse_latency
from scripts import ERROR_RULES

MODEL = "claude-haiku-4-5"
SCHEMA = {
    "type": "object",
    "properties": {"decision": {"type": "string", "enum": ["approve", "reject"]}},
    "required": ["decision"],
}
TOOL = {"name": "verdict", "description": "the verdict", "input_schema": SCHEMA}
FORCE = {"type": "tool", "name": "verdict"}
RULES = [
    {"match": "greet", "reply": "Hello from the script."},
    {"match": "judge", "data": {"decision": "reject"}},
    {"match": "chatty", "reply": "I would rather not use a tool."},
    {"match": "long", "reply": "word " * 200},
    {"match": "slow", "reply": "finally", "latency": 0.2},
    *ERROR_RULES,
]


@pytest.fixture
async def emu() -> AsyncIterator[Emulator]:
    async with Emulator(script=RULES) as emulator:
        yield emulator


def claude(emu: Emulator, timeout: float = 5.0) -> anthropic.AsyncAnthropic:
    return anthropic.AsyncAnthropic(
        base_url=emu.anthropic_base_url, api_key=DUMMY_KEY, max_retries=0, timeout=timeout
    )


def gpt(emu: Emulator, timeout: float = 5.0) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=emu.openai_base_url, api_key=DUMMY_KEY, max_retries=0, timeout=timeout)


async def ask(client: anthropic.AsyncAnthropic, text: str, **options: Any) -> Any:
    options.setdefault("max_tokens", 256)
    messages = [{"role": "user", "content": text}]
    return await client.messages.create(model=MODEL, messages=messages, **options)


async def read_stream(client: anthropic.AsyncAnthropic, text: str) -> list[Any]:
    stream = await ask(client, text, stream=True)
    return [event async for event in stream]


async def chat(client: openai.AsyncOpenAI, text: str, **options: Any) -> Any:
    messages = [{"role": "user", "content": text}]
    return await client.chat.completions.create(model="gpt-4o-mini", messages=messages, **options)


# --- Anthropic: replies ---------------------------------------------------------------


async def test_default_reply_is_a_deterministic_echo(emu: Emulator) -> None:
    message = await ask(claude(emu), "What   is two plus two?", system="Be brief.")
    assert message.type == "message"
    assert message.role == "assistant"
    assert message.content[0].text == "echo: What is two plus two?"
    assert message.stop_reason == "end_turn"
    assert message.model == MODEL
    assert message.usage.input_tokens > 0
    assert message.usage.output_tokens > 0
    assert message.usage.cache_read_input_tokens == 0


async def test_scripted_reply_matches_system_and_messages(emu: Emulator) -> None:
    message = await ask(claude(emu), "please", system="greet the user")
    assert message.content[0].text == "Hello from the script."


async def test_content_blocks_and_headers_are_read(emu: Emulator) -> None:
    raw = await claude(emu).messages.with_raw_response.create(
        model=MODEL,
        max_tokens=50,
        messages=[{"role": "user", "content": [{"type": "text", "text": "greet me"}]}],
    )
    assert raw.headers["request-id"].startswith("req_")
    assert "anthropic-ratelimit-requests-limit" not in raw.headers  # no limits configured
    assert (await raw.parse()).content[0].text == "Hello from the script."


async def test_forced_tool_returns_tool_use_with_scripted_input(emu: Emulator) -> None:
    message = await ask(claude(emu), "judge this", tools=[TOOL], tool_choice=FORCE)
    block = message.content[0]
    assert block.type == "tool_use"
    assert block.name == "verdict"
    assert block.input == {"decision": "reject"}
    assert message.stop_reason == "tool_use"


async def test_forced_tool_without_rule_answers_the_simplest_fit(emu: Emulator) -> None:
    message = await ask(claude(emu), "anything", tools=[TOOL], tool_choice=FORCE)
    assert message.content[0].input == {"decision": "approve"}


async def test_text_script_under_forced_tool_gives_a_text_block(emu: Emulator) -> None:
    message = await ask(claude(emu), "chatty", tools=[TOOL], tool_choice=FORCE)
    assert [b.type for b in message.content] == ["text"]


async def test_answer_over_max_tokens_is_cut(emu: Emulator) -> None:
    message = await ask(claude(emu), "long", max_tokens=10)
    assert message.stop_reason == "max_tokens"
    assert len(message.content[0].text) <= 40


async def test_stop_sequence_cuts_the_answer(emu: Emulator) -> None:
    message = await ask(claude(emu), "greet", stop_sequences=["from"])
    assert message.content[0].text == "Hello "
    assert message.stop_reason == "stop_sequence"
    assert message.stop_sequence == "from"


async def test_invalid_request_is_a_400_invalid_request_error(emu: Emulator) -> None:
    choice = {"type": "tool", "name": "missing"}
    with pytest.raises(anthropic.BadRequestError) as caught:
        await ask(claude(emu), "hi", tools=[TOOL], tool_choice=choice)
    assert caught.value.type == "invalid_request_error"
    assert "missing" in (caught.value.api_message or "")


async def test_sampling_parameters_are_refused_as_by_api_version_2026_10_21(emu: Emulator) -> None:
    with pytest.raises(anthropic.BadRequestError, match="temperature: Extra inputs"):
        await ask(claude(emu), "hi", extra_body={"temperature": 1.0})
    old = {"anthropic-version": "2023-06-01"}
    message = await ask(claude(emu), "hi", extra_body={"temperature": 0.5}, extra_headers=old)
    assert message.stop_reason == "end_turn"


# --- Anthropic: streaming -------------------------------------------------------------


async def test_stream_of_text_parses_in_the_sdk(emu: Emulator) -> None:
    messages = [{"role": "user", "content": "greet"}]
    async with claude(emu).messages.stream(model=MODEL, max_tokens=50, messages=messages) as s:
        kinds = [event.type async for event in s]
        final = await s.get_final_message()
    assert kinds[0] == "message_start"
    assert kinds[-1] == "message_stop"
    assert "content_block_delta" in kinds
    assert final.content[0].text == "Hello from the script."
    assert final.stop_reason == "end_turn"
    assert final.usage.output_tokens > 1


async def test_stream_of_tool_input_parses_in_the_sdk(emu: Emulator) -> None:
    messages = [{"role": "user", "content": "judge"}]
    async with claude(emu).messages.stream(
        model=MODEL, max_tokens=50, messages=messages, tools=[TOOL], tool_choice=FORCE
    ) as s:
        final = await s.get_final_message()
    assert final.content[0].input == {"decision": "reject"}
    assert final.stop_reason == "tool_use"


async def test_stream_sends_first_byte_at_half_the_latency() -> None:
    async with Emulator(script=[{"match": "warm", "reply": "ok", "latency": 0}], latency=0.3) as emu:
        client = claude(emu)
        await ask(client, "warm up the connection")
        started = time.perf_counter()
        stream = await ask(client, "x", stream=True)
        times = [time.perf_counter() - started async for _ in stream]
    # Lower bounds only: a busy machine can make events late, never early.
    assert times[0] >= 0.14  # message_start at about L/2
    assert times[-1] >= 0.28  # message_stop at about L
    assert times[0] < times[-1] - 0.05  # they came apart, not in one piece at the end


# --- OpenAI ---------------------------------------------------------------------------


async def test_openai_text_reply_and_usage(emu: Emulator) -> None:
    completion = await chat(gpt(emu), "greet", max_tokens=50)
    assert completion.object == "chat.completion"
    assert completion.choices[0].message.content == "Hello from the script."
    assert completion.choices[0].finish_reason == "stop"
    usage = completion.usage
    assert usage is not None
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
    assert usage.prompt_tokens_details is not None
    assert usage.prompt_tokens_details.cached_tokens == 0


async def test_openai_json_schema_gives_scripted_json_content(emu: Emulator) -> None:
    fmt = {"type": "json_schema", "json_schema": {"name": "verdict", "schema": SCHEMA, "strict": True}}
    completion = await chat(gpt(emu), "judge", response_format=fmt, max_completion_tokens=50)
    assert json.loads(completion.choices[0].message.content or "") == {"decision": "reject"}


async def test_openai_cut_answer_finishes_with_length(emu: Emulator) -> None:
    completion = await chat(gpt(emu), "long", max_tokens=5)
    assert completion.choices[0].finish_reason == "length"


async def test_openai_stream_with_usage(emu: Emulator) -> None:
    stream = await chat(gpt(emu), "greet", stream=True, stream_options={"include_usage": True})
    chunks = [chunk async for chunk in stream]
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "Hello from the script."
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens > 0


async def test_openai_caches_a_long_system_prompt() -> None:
    async with Emulator() as emu:
        client = gpt(emu)
        system = "You review code. " * 300  # over OpenAI's 1024-token minimum
        messages = [{"role": "system", "content": system}, {"role": "user", "content": "hi"}]
        first = await client.chat.completions.create(model="gpt-4o", messages=messages)
        second = await client.chat.completions.create(model="gpt-4o", messages=messages)
    assert first.usage
    assert first.usage.prompt_tokens_details
    assert second.usage
    assert second.usage.prompt_tokens_details
    assert first.usage.prompt_tokens_details.cached_tokens == 0
    assert second.usage.prompt_tokens_details.cached_tokens > 1000


async def test_openai_missing_authorization_is_401(emu: Emulator) -> None:
    async with httpx2.AsyncClient(base_url=emu.url) as client:
        response = await client.post("/v1/chat/completions", json={"model": "m", "messages": []})
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "invalid_api_key"


# --- errors, injected and scripted ----------------------------------------------------


def client_timeout(kind: str) -> float:
    """Short only where a hang is expected: elsewhere a busy machine could let the
    client's timeout pass before the error it waits for arrives."""
    return 0.2 if "hang" in kind else 5.0


ANTHROPIC_ERRORS = [
    ("429", anthropic.RateLimitError),
    ("500", anthropic.InternalServerError),
    ("529", anthropic.OverloadedError),
    ("reset", anthropic.APIConnectionError),
    ("hang", anthropic.APITimeoutError),
    ("malformed", json.JSONDecodeError),
]


@pytest.mark.parametrize(("kind", "expected"), ANTHROPIC_ERRORS)
async def test_injected_error_raises_the_sdk_exception(kind: str, expected: type) -> None:
    async with Emulator(errors={kind: 1.0}) as emu:
        with pytest.raises(expected) as caught:
            await ask(claude(emu, timeout=client_timeout(kind)), "hi")
    if kind == "reset":
        assert not isinstance(caught.value, anthropic.APITimeoutError)
    if kind == "429":
        assert caught.value.response.headers["retry-after"] == "1"
        assert caught.value.type == "rate_limit_error"


@pytest.mark.parametrize(("kind", "expected"), ANTHROPIC_ERRORS)
async def test_injected_error_in_a_stream_request(kind: str, expected: type) -> None:
    async with Emulator(errors={kind: 1.0}) as emu:
        with pytest.raises(expected):
            await read_stream(claude(emu, timeout=client_timeout(kind)), "hi")


@pytest.mark.parametrize(
    ("prompt", "expected"),
    [
        ("e429", anthropic.RateLimitError),
        ("e529", anthropic.OverloadedError),
        ("e500", anthropic.InternalServerError),
        ("e400", anthropic.BadRequestError),
        ("e401", anthropic.AuthenticationError),
        ("e404", anthropic.NotFoundError),
        ("ereset", anthropic.APIConnectionError),
        ("ehang", anthropic.APITimeoutError),
        ("ebroken", json.JSONDecodeError),
    ],
)
async def test_scripted_error_raises_the_sdk_exception(emu: Emulator, prompt: str, expected: type) -> None:
    with pytest.raises(expected):
        await ask(claude(emu, timeout=client_timeout(prompt)), prompt)


@pytest.mark.parametrize(
    ("kind", "expected"),
    [
        ("429", openai.RateLimitError),
        ("500", openai.InternalServerError),
        ("reset", openai.APIConnectionError),
        ("hang", openai.APITimeoutError),
        ("malformed", json.JSONDecodeError),
    ],
)
async def test_injected_error_raises_the_openai_exception(kind: str, expected: type) -> None:
    async with Emulator(errors={kind: 1.0}) as emu:
        with pytest.raises(expected):
            await chat(gpt(emu, timeout=client_timeout(kind)), "hi")


async def test_missing_api_key_is_401_authentication_error(emu: Emulator) -> None:
    async with httpx2.AsyncClient(base_url=emu.url) as client:
        response = await client.post("/v1/messages", json={"model": MODEL})
    assert response.status_code == 401
    assert response.json()["error"]["type"] == "authentication_error"


async def test_error_draws_repeat_for_a_seed() -> None:
    async def statuses(seed: int) -> list[int]:
        async with Emulator(errors={"500": 0.5}, seed=seed) as emu:
            client = claude(emu)
            out = []
            for _ in range(12):
                try:
                    await ask(client, "hi")
                    out.append(200)
                except anthropic.InternalServerError:
                    out.append(500)
            return out

    first = await statuses(7)
    assert first == await statuses(7)
    assert 200 in first
    assert 500 in first


@pytest.mark.parametrize(
    ("errors", "words"),
    [
        ({"418": 0.1}, "unknown error kind"),
        ({"500": 1.5}, "between 0 and 1"),
        ({"500": 0.6, "429": 0.6}, "at most 1"),
    ],
)
def test_bad_error_shares_are_refused(errors: dict[str, float], words: str) -> None:
    with pytest.raises(ConfigError, match=words):
        Emulator(errors=errors)


# --- enforced limits ------------------------------------------------------------------


async def test_rate_limit_headers_are_sent_when_limits_are_set() -> None:
    # 6 a minute refills one request every 10 s: the two answers' counts cannot be told
    # apart by the time a busy machine takes between them
    async with Emulator(rpm=6, itpm=10_000) as emu:
        raw = await claude(emu).messages.with_raw_response.create(
            model=MODEL, max_tokens=20, messages=[{"role": "user", "content": "hello"}]
        )
        openai_raw = await gpt(emu).chat.completions.with_raw_response.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "hello"}]
        )
    headers = raw.headers
    assert headers["anthropic-ratelimit-requests-limit"] == "6"
    assert headers["anthropic-ratelimit-requests-remaining"] == "5"
    assert headers["anthropic-ratelimit-input-tokens-limit"] == "10000"
    assert headers["anthropic-ratelimit-requests-reset"].endswith("Z")
    assert openai_raw.headers["x-ratelimit-limit-requests"] == "6"
    assert openai_raw.headers["x-ratelimit-remaining-requests"] == "4"
    assert openai_raw.headers["x-ratelimit-reset-requests"].endswith("s")


async def test_enforced_rpm_answers_429_with_retry_after() -> None:
    async with Emulator(rpm=2) as emu:
        client = claude(emu)
        await ask(client, "one")
        await ask(client, "two")
        with pytest.raises(anthropic.RateLimitError) as caught:
            await ask(client, "three")
    headers = caught.value.response.headers
    assert 28 <= int(headers["retry-after"]) <= 30  # one request refills every 60/2 s
    assert headers["anthropic-ratelimit-requests-remaining"] == "0"
    assert emu.stats.count(status=429) == 1


async def test_burst_limits_how_much_of_a_minute_can_be_spent_at_once() -> None:
    async with Emulator(rpm=6, burst=20.0) as emu:  # one every 10 s, the bucket holds 2
        client = claude(emu)
        results = await asyncio.gather(*(ask(client, "x") for _ in range(4)), return_exceptions=True)
    refused = [r for r in results if isinstance(r, anthropic.RateLimitError)]
    assert len(refused) == 2


async def test_enforced_itpm_charges_input_tokens() -> None:
    async with Emulator(itpm=100) as emu:
        client = claude(emu)
        await ask(client, "x" * 300)  # about 75 tokens
        with pytest.raises(anthropic.RateLimitError, match="input tokens"):
            await ask(client, "x" * 300)
        with pytest.raises(anthropic.RateLimitError, match="can ever hold"):
            await ask(client, "x" * 1000)


# --- prompt cache ---------------------------------------------------------------------


def cached_system(text: str) -> list[dict[str, Any]]:
    return [{"type": "text", "text": text, "cache_control": {"type": "ephemeral"}}]


async def test_cache_write_then_read() -> None:
    system = cached_system("You are a careful reviewer. " * 40)
    async with Emulator() as emu:
        client = claude(emu)
        first = await ask(client, "review a", system=system)
        second = await ask(client, "review b", system=system)
        plain = await ask(client, "review b")
    assert first.usage.cache_creation_input_tokens > 200
    assert first.usage.cache_read_input_tokens == 0
    assert second.usage.cache_read_input_tokens == first.usage.cache_creation_input_tokens
    assert second.usage.cache_creation_input_tokens == 0
    assert second.usage.input_tokens < plain.usage.input_tokens + 5  # the rest only
    assert (emu.stats.cache_writes, emu.stats.cache_reads) == (1, 1)


async def test_simultaneous_calls_each_write_the_cache() -> None:
    system = cached_system("Shared instructions. " * 40)
    async with Emulator(latency=0.5) as emu:  # all three arrive before the first starts
        client = claude(emu)
        replies = await asyncio.gather(*(ask(client, f"q{i}", system=system) for i in range(3)))
    assert all(r.usage.cache_creation_input_tokens > 0 for r in replies)
    assert emu.stats.cache_writes == 3
    assert emu.stats.cache_reads == 0


async def test_calls_after_the_leaders_first_byte_read_the_cache() -> None:
    system = cached_system("Shared instructions. " * 40)
    messages = [{"role": "user", "content": "leader"}]
    async with Emulator(latency=0.2) as emu:
        client = claude(emu)
        async with client.messages.stream(
            model=MODEL,
            max_tokens=50,
            system=system,
            messages=messages,  # type: ignore[arg-type]
        ) as leader:
            await leader.__anext__()  # message_start: the leader's response has begun
            follower = await ask(client, "follower", system=system)
            await leader.get_final_message()
    assert follower.usage.cache_read_input_tokens > 0
    assert (emu.stats.cache_writes, emu.stats.cache_reads) == (1, 1)


# --- connections ----------------------------------------------------------------------


async def eventually(check: Any, within: float = 3.0) -> bool:
    """Poll ``check()`` until true: the server sees a closed socket a moment later."""
    for _ in range(int(within / 0.01)):
        if check():
            return True
        await asyncio.sleep(0.01)
    return bool(check())


async def test_client_disconnect_mid_request_counts_as_aborted() -> None:
    async with Emulator(latency=5.0) as emu:
        client = claude(emu)
        task = asyncio.create_task(ask(client, "x"))
        assert await eventually(lambda: emu.stats.in_flight == 1)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert await eventually(lambda: emu.stats.aborted == 1)
        assert emu.stats.in_flight == 0


async def test_hang_is_released_when_the_client_times_out() -> None:
    async with Emulator(errors={"hang": 1.0}) as emu:
        with pytest.raises(anthropic.APITimeoutError):
            await ask(claude(emu, timeout=0.2), "x")
        assert await eventually(lambda: emu.stats.aborted == 1)
        assert emu.stats.in_flight == 0


async def test_keep_alive_reuses_one_connection(emu: Emulator) -> None:
    client = claude(emu)
    for _ in range(5):
        await ask(client, "x")
    assert emu.stats.connections_total == 1
    assert emu.stats.count(path="/v1/messages", status=200) == 5
    assert emu.stats.max_in_flight == 1


async def test_unknown_route_and_health(emu: Emulator) -> None:
    async with httpx2.AsyncClient(base_url=emu.url) as client:
        assert (await client.get("/")).status_code == 200
        missing = await client.post("/v1/complete", json={})
        wrong_method = await client.get("/v1/messages")
    assert missing.status_code == 404
    assert missing.json()["error"]["type"] == "not_found_error"
    assert wrong_method.status_code == 405


async def test_chunked_request_bodies_are_read(emu: Emulator) -> None:
    body = json.dumps(
        {"model": MODEL, "max_tokens": 9, "messages": [{"role": "user", "content": "a"}]}
    ).encode()
    reader, writer = await asyncio.open_connection("127.0.0.1", emu.port)
    writer.write(
        b"POST /v1/messages HTTP/1.1\r\nHost: x\r\nx-api-key: k\r\nTransfer-Encoding: chunked\r\n\r\n"
    )
    writer.write(b"%x\r\n%b\r\n0\r\n\r\n" % (len(body), body))
    await writer.drain()
    status_line = await reader.readline()
    writer.close()
    assert b" 200 " in status_line


async def test_hundreds_of_simultaneous_connections_are_served() -> None:
    body = json.dumps(
        {"model": MODEL, "max_tokens": 9, "messages": [{"role": "user", "content": "a"}]}
    ).encode()
    head = b"POST /v1/messages HTTP/1.1\r\nHost: x\r\nx-api-key: k\r\ncontent-length: %d\r\n\r\n" % len(body)

    async def one(port: int) -> bytes:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(head + body)
        status = await reader.readline()
        writer.close()
        return status

    async with Emulator(latency=0.1) as emu:
        statuses = await asyncio.gather(*(one(emu.port) for _ in range(300)))
    assert {s.split(b" ")[1] for s in statuses} == {b"200"}
    assert emu.stats.max_in_flight > 100


def test_in_thread_serves_synchronous_callers() -> None:
    with Emulator(script=RULES).in_thread() as emu:
        response = httpx2.post(
            emu.anthropic_base_url + "/v1/messages",
            headers={"x-api-key": "k"},
            json={"model": MODEL, "max_tokens": 20, "messages": [{"role": "user", "content": "greet"}]},
        )
        env = emu.env()
    assert response.json()["content"][0]["text"] == "Hello from the script."
    assert env["OPENAI_BASE_URL"].endswith("/v1")
    assert env["ANTHROPIC_API_KEY"] == DUMMY_KEY


def test_urls_need_a_running_emulator() -> None:
    with pytest.raises(RuntimeError, match="not running"):
        _ = Emulator().url


async def test_recent_keeps_request_bodies(emu: Emulator) -> None:
    await ask(claude(emu), "hi", stop_sequences=["END"])
    path, body = emu.recent[-1]
    assert path == "/v1/messages"
    assert body["stop_sequences"] == ["END"]


# --- latency --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "words"),
    [
        ("fast", "not a number"),
        ("gamma:1,2", "unknown distribution"),
        ("uniform:0.5", "takes 2 number"),
        ("uniform:0.5,0.1", "LOW <= HIGH"),
        ("normal:1,x", "not a number"),
        ("lognormal:0,1", "MEDIAN > 0"),
        ("exp:1,2", "takes 1 number"),
        ("-1", "negative"),
    ],
)
def test_bad_latency_specs_explain_the_forms(spec: str, words: str) -> None:
    with pytest.raises(ConfigError, match=words):
        parse_latency(spec)


def test_latency_specs_parse_and_sample_in_range() -> None:
    import random

    rng = random.Random(1)
    assert parse_latency(0.25).sample(rng) == 0.25
    assert parse_latency(" 0.5 ").sample(rng) == 0.5
    uniform = parse_latency("uniform:0.1,0.3")
    assert all(0.1 <= uniform.sample(rng) <= 0.3 for _ in range(100))
    assert all(parse_latency("normal:0.1,1").sample(rng) >= 0 for _ in range(100))
    samples = sorted(parse_latency("lognormal:0.2,0.5").sample(rng) for _ in range(999))
    assert 0.15 < samples[499] < 0.25  # the median
    assert str(parse_latency("exp:0.5")) == "exp:0.5"


def test_bad_latency_is_refused_by_the_emulator() -> None:
    with pytest.raises(ConfigError, match="latency"):
        Emulator(latency="soon")


# --- the command ----------------------------------------------------------------------


def test_quorum_emulate_serves_and_stops_cleanly_on_ctrl_c() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "quorum.cli.emulate", "--port", "0", "--rpm", "50"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()
        url = first.rsplit(" ", 1)[-1].strip()
        assert first.startswith("quorum emulator listening on http://127.0.0.1:")
        response = httpx2.post(
            url + "/v1/messages",
            headers={"x-api-key": "k"},
            json={"model": MODEL, "max_tokens": 9, "messages": [{"role": "user", "content": "a"}]},
        )
        assert response.headers["anthropic-ratelimit-requests-limit"] == "50"
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=10)
        out, err = proc.stdout.read(), proc.stderr.read() if proc.stderr else ""
    finally:
        proc.kill()
    assert "export ANTHROPIC_BASE_URL=" + url in out
    assert "Traceback" not in err
    assert "stopped after 1 requests" in err
    assert proc.returncode == 0


def test_quorum_emulate_refuses_a_bad_latency() -> None:
    import typer
    from typer.testing import CliRunner

    from quorum.cli import emulate

    app = typer.Typer()
    app.command()(emulate.command)
    result = CliRunner().invoke(app, ["--latency", "uniform:2"])
    assert result.exit_code == 2
    assert "takes 2 number" in result.output


def test_quorum_emulate_refuses_a_port_out_of_range_in_one_line() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "quorum.cli.emulate", "--port", "99999"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines() == [
        "quorum emulate: --port 99999 is not a TCP port: give 1 to 65535, or 0 for a free one"
    ]


def test_quorum_emulate_takes_tpm_as_another_name_for_itpm(monkeypatch: pytest.MonkeyPatch) -> None:
    import typer
    from typer.testing import CliRunner

    from quorum.cli import emulate

    seen: dict[str, Any] = {}

    def recording(*args: Any, **kwargs: Any) -> Emulator:
        seen.update(kwargs)
        return Emulator(*args, **kwargs)

    async def serve_nothing(emulator: Emulator) -> None:
        return None

    monkeypatch.setattr("quorum.testing.emulator.Emulator", recording)
    monkeypatch.setattr(emulate, "_serve", serve_nothing)
    app = typer.Typer()
    app.command()(emulate.command)
    result = CliRunner().invoke(app, ["--tpm", "1234", "--batch-time", "5", "--batch-expired", "0.1"])
    assert result.exit_code == 0, result.output
    assert seen["itpm"] == 1234
    assert (seen["batch_time"], seen["batch_expired"]) == (5.0, 0.1)


async def test_stop_closes_idle_keep_alive_connections_at_once() -> None:
    emu = Emulator()
    await emu.start()
    reader, writer = await asyncio.open_connection("127.0.0.1", emu.port)
    body = json.dumps(
        {"model": MODEL, "max_tokens": 9, "messages": [{"role": "user", "content": "a"}]}
    ).encode()
    writer.write(
        b"POST /v1/messages HTTP/1.1\r\nHost: x\r\nx-api-key: k\r\ncontent-length: %d\r\n\r\n%b"
        % (len(body), body)
    )
    await writer.drain()
    assert b" 200 " in await reader.readline()
    await reader.readuntil(b"}}")  # the whole reply: the connection is now idle and kept alive
    assert emu.stats.connections_open == 1
    await emu.stop()
    assert emu.stats.connections_open == 0
    assert await asyncio.wait_for(reader.read(), 5) == b""  # closed by the server, not left for a timeout
    writer.close()


async def test_a_failing_handler_answers_500_and_closes_the_connection(
    emu: Emulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def broken(*args: Any) -> None:
        raise RuntimeError("a bug")

    monkeypatch.setattr(emu, "_serve_call", broken)
    async with httpx2.AsyncClient(base_url=emu.url) as client:
        response = await client.post(
            "/v1/messages",
            headers={"x-api-key": "k"},
            json={"model": MODEL, "max_tokens": 9, "messages": [{"role": "user", "content": "a"}]},
        )
    assert response.status_code == 500
    assert response.text == "emulator bug\n"
    assert response.headers["connection"] == "close"
    assert emu.stats.count(status=500) == 1
