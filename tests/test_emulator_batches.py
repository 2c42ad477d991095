"""The emulator's batch APIs through the official SDKs: Anthropic Message Batches, OpenAI Files and Batch."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import anthropic
import openai
import pytest

from quorum.errors import ConfigError
from quorum.testing.emulator import Emulator

MODEL = "claude-haiku-4-5"
GPT = "gpt-4o-mini"
RULES = [
    {"match": "greet", "reply": "Hello from the script."},
    {"match": "overloaded", "error": "overloaded"},
]
FAST = 0.05  # seconds until a batch ends


def claude(emu: Emulator) -> anthropic.AsyncAnthropic:
    return anthropic.AsyncAnthropic(base_url=emu.anthropic_base_url, api_key="k", max_retries=0)


def gpt(emu: Emulator) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=emu.openai_base_url, api_key="k", max_retries=0)


def anthropic_requests(prompts: list[str]) -> list[Any]:
    return [
        {
            "custom_id": f"item-{i}",
            "params": {"model": MODEL, "max_tokens": 50, "messages": [{"role": "user", "content": p}]},
        }
        for i, p in enumerate(prompts)
    ]


def openai_file(prompts: list[str], model: str = GPT) -> bytes:
    lines = [
        {
            "custom_id": f"item-{i}",
            "method": "POST",
            "url": "/v1/chat/completions",
            "body": {"model": model, "max_tokens": 50, "messages": [{"role": "user", "content": p}]},
        }
        for i, p in enumerate(prompts)
    ]
    return "\n".join(json.dumps(line) for line in lines).encode()


async def ended(get: Any, done: Any) -> Any:
    for _ in range(200):
        batch = await get()
        if done(batch):
            return batch
        await asyncio.sleep(0.02)
    raise AssertionError("the batch never ended")


# --- Anthropic ------------------------------------------------------------------------


async def test_anthropic_batch_lifecycle_through_the_sdk() -> None:
    prompts = ["greet me", "overloaded now", *(f"echo {i}" for i in range(8))]
    async with Emulator(script=RULES, batch_time=FAST) as emu:
        client = claude(emu)
        batch = await client.messages.batches.create(requests=anthropic_requests(prompts))
        assert batch.processing_status == "in_progress"
        assert batch.request_counts.processing == len(prompts)
        assert batch.results_url is None
        done = await ended(
            lambda: client.messages.batches.retrieve(batch.id), lambda b: b.processing_status == "ended"
        )
        assert done.request_counts.succeeded == 9
        assert done.request_counts.errored == 1
        assert done.ended_at is not None
        results = [r async for r in await client.messages.batches.results(batch.id)]
        listed = [b.id async for b in client.messages.batches.list(limit=10)]
        await client.close()
    by_id = {r.custom_id: r.result for r in results}
    assert [r.custom_id for r in results] != [f"item-{i}" for i in range(len(prompts))]  # not the input order
    assert sorted(by_id) == sorted(f"item-{i}" for i in range(len(prompts)))
    greeting = by_id["item-0"]
    assert greeting.type == "succeeded"
    assert greeting.message.content[0].text == "Hello from the script."  # type: ignore[union-attr]
    failed = by_id["item-1"]
    assert failed.type == "errored"
    assert failed.error.error.type == "overloaded_error"  # type: ignore[union-attr]
    assert listed == [batch.id]
    assert emu.stats.batches_created == 1
    assert emu.stats.batch_items == 10
    assert emu.stats.batch_items_billed == 9
    assert emu.stats.batch_input_tokens > 0


async def test_anthropic_batch_bill_is_half_the_online_price() -> None:
    from quorum.llm.pricing import cost_of
    from quorum.llm.types import Usage

    async with Emulator(batch_time=0) as emu:
        client = claude(emu)
        batch = await client.messages.batches.create(requests=anthropic_requests(["a", "b"]))
        await ended(
            lambda: client.messages.batches.retrieve(batch.id), lambda b: b.processing_status == "ended"
        )
        await client.close()
    usage = Usage(input_tokens=emu.stats.batch_input_tokens, output_tokens=emu.stats.batch_output_tokens)
    online = cost_of(MODEL, usage)
    assert online is not None
    assert emu.stats.batch_cost_usd == pytest.approx(online / 2)


async def test_anthropic_cancel_keeps_what_finished_and_cancels_the_rest() -> None:
    async with Emulator(batch_time=30) as emu:
        client = claude(emu)
        batch = await client.messages.batches.create(requests=anthropic_requests(["a", "b", "c"]))
        cancelling = await client.messages.batches.cancel(batch.id)
        after = await client.messages.batches.retrieve(batch.id)
        results = [r async for r in await client.messages.batches.results(batch.id)]
        await client.close()
    assert cancelling.processing_status == "canceling"
    assert cancelling.cancel_initiated_at is not None
    assert after.processing_status == "ended"
    assert after.request_counts.canceled == 3  # 30 s to go: nothing had finished
    assert {r.result.type for r in results} == {"canceled"}
    assert emu.stats.batch_items_billed == 0


async def test_anthropic_shares_of_errored_and_expired_items() -> None:
    async with Emulator(batch_time=0, batch_errored=0.3, batch_expired=0.2, seed=3) as emu:
        client = claude(emu)
        batch = await client.messages.batches.create(
            requests=anthropic_requests([f"x{i}" for i in range(200)])
        )
        done = await ended(
            lambda: client.messages.batches.retrieve(batch.id), lambda b: b.processing_status == "ended"
        )
        results = [r async for r in await client.messages.batches.results(batch.id)]
        await client.close()
    counts = done.request_counts
    assert 40 <= counts.errored <= 80
    assert 20 <= counts.expired <= 60
    assert counts.succeeded + counts.errored + counts.expired == 200
    assert sum(r.result.type == "expired" for r in results) == counts.expired
    assert emu.stats.batch_items_billed == counts.succeeded


async def test_anthropic_batch_limits_and_bad_requests_are_refused() -> None:
    async with Emulator(batch_max_requests=2) as emu:
        client = claude(emu)
        with pytest.raises(anthropic.BadRequestError, match="over the limit of 2"):
            await client.messages.batches.create(requests=anthropic_requests(["a", "b", "c"]))
        twice = anthropic_requests(["a", "b"])
        twice[1]["custom_id"] = twice[0]["custom_id"]
        with pytest.raises(anthropic.BadRequestError, match="used twice"):
            await client.messages.batches.create(requests=twice)
        with pytest.raises(anthropic.NotFoundError):
            await client.messages.batches.retrieve("msgbatch_nope")
        await client.close()
    async with Emulator(batch_max_bytes=100) as emu:
        client = claude(emu)
        with pytest.raises(anthropic.APIStatusError) as caught:
            await client.messages.batches.create(requests=anthropic_requests(["a"]))
        await client.close()
    assert caught.value.status_code == 413


async def test_anthropic_item_with_bad_params_errors_alone() -> None:
    requests = anthropic_requests(["fine", "bad"])
    del requests[1]["params"]["max_tokens"]
    async with Emulator(batch_time=0) as emu:
        client = claude(emu)
        batch = await client.messages.batches.create(requests=requests)
        await ended(
            lambda: client.messages.batches.retrieve(batch.id), lambda b: b.processing_status == "ended"
        )
        results = {r.custom_id: r.result async for r in await client.messages.batches.results(batch.id)}
        deleted = await client.messages.batches.delete(batch.id)
        await client.close()
    assert results["item-0"].type == "succeeded"
    assert results["item-1"].type == "errored"
    assert "max_tokens" in results["item-1"].error.error.message  # type: ignore[union-attr]
    assert deleted.type == "message_batch_deleted"


# --- OpenAI ---------------------------------------------------------------------------


async def test_openai_file_and_batch_lifecycle_through_the_sdk() -> None:
    prompts = ["greet me", "overloaded now", *(f"echo {i}" for i in range(8))]
    async with Emulator(script=RULES, batch_time=FAST) as emu:
        client = gpt(emu)
        uploaded = await client.files.create(file=("in.jsonl", openai_file(prompts)), purpose="batch")
        assert uploaded.purpose == "batch"
        assert (await client.files.content(uploaded.id)).content == openai_file(prompts)
        batch = await client.batches.create(
            input_file_id=uploaded.id,
            endpoint="/v1/chat/completions",
            completion_window="24h",
            metadata={"job": "j1"},
        )
        assert batch.status == "validating"
        done = await ended(lambda: client.batches.retrieve(batch.id), lambda b: b.status == "completed")
        assert done.output_file_id is not None
        assert done.error_file_id is not None
        output = (await client.files.content(done.output_file_id)).text.splitlines()
        errors = (await client.files.content(done.error_file_id)).text.splitlines()
        listed = await client.batches.list(limit=5)
        await client.close()
    assert done.metadata == {"job": "j1"}
    assert done.request_counts is not None
    assert (done.request_counts.total, done.request_counts.completed, done.request_counts.failed) == (
        10,
        9,
        1,
    )
    lines = [json.loads(line) for line in output]
    assert [line["custom_id"] for line in lines] != [f"item-{i}" for i in range(10) if i != 1]
    greeting = next(line for line in lines if line["custom_id"] == "item-0")
    assert greeting["response"]["status_code"] == 200
    assert greeting["response"]["body"]["choices"][0]["message"]["content"] == "Hello from the script."
    failed = json.loads(errors[0])
    assert failed["custom_id"] == "item-1"
    assert failed["response"]["status_code"] == 529
    assert [b.id for b in listed.data] == [batch.id]
    assert emu.stats.batches_created == 1
    assert emu.stats.batch_items_billed == 9


async def test_openai_cancel_and_expiry() -> None:
    async with Emulator(batch_time=30) as emu:
        client = gpt(emu)
        uploaded = await client.files.create(file=("in.jsonl", openai_file(["a", "b"])), purpose="batch")
        batch = await client.batches.create(
            input_file_id=uploaded.id, endpoint="/v1/chat/completions", completion_window="24h"
        )
        assert (await client.batches.retrieve(batch.id)).status == "in_progress"
        cancelling = await client.batches.cancel(batch.id)
        after = await client.batches.retrieve(batch.id)
        await client.close()
    assert cancelling.status == "cancelling"
    assert after.status == "cancelled"
    assert after.output_file_id is None
    async with Emulator(batch_time=0, batch_expired=1.0) as emu:
        client = gpt(emu)
        uploaded = await client.files.create(file=("in.jsonl", openai_file(["a", "b"])), purpose="batch")
        batch = await client.batches.create(
            input_file_id=uploaded.id, endpoint="/v1/chat/completions", completion_window="24h"
        )
        done = await ended(lambda: client.batches.retrieve(batch.id), lambda b: b.status == "expired")
        assert done.error_file_id is not None
        errors = (await client.files.content(done.error_file_id)).text.splitlines()
        await client.close()
    assert {json.loads(line)["error"]["code"] for line in errors} == {"batch_expired"}


async def test_openai_invalid_file_fails_the_batch_with_line_numbers() -> None:
    data = openai_file(["a", "b"]) + b"\nnot json\n" + openai_file(["c"], model="gpt-4o")
    async with Emulator(batch_time=0) as emu:
        client = gpt(emu)
        uploaded = await client.files.create(file=("in.jsonl", data), purpose="batch")
        batch = await client.batches.create(
            input_file_id=uploaded.id, endpoint="/v1/chat/completions", completion_window="24h"
        )
        with pytest.raises(openai.BadRequestError, match="completion_window"):
            await client.batches.create(
                input_file_id=uploaded.id, endpoint="/v1/chat/completions", completion_window="1h"
            )  # type: ignore[arg-type]
        with pytest.raises(openai.NotFoundError):
            await client.batches.retrieve("batch_nope")
        await client.close()
    assert batch.status == "failed"
    assert batch.errors is not None
    assert batch.errors.data is not None
    found = {(e.code, e.line) for e in batch.errors.data}
    assert ("invalid_json_line", 3) in found
    assert ("duplicate_custom_id", 4) in found  # the third line again calls itself item-0


async def test_openai_request_limit_fails_the_batch() -> None:
    async with Emulator(batch_max_requests=2, batch_time=0) as emu:
        client = gpt(emu)
        uploaded = await client.files.create(file=("in.jsonl", openai_file(["a", "b", "c"])), purpose="batch")
        batch = await client.batches.create(
            input_file_id=uploaded.id, endpoint="/v1/chat/completions", completion_window="24h"
        )
        await client.close()
    assert batch.status == "failed"
    assert batch.errors is not None
    assert batch.errors.data is not None
    assert [e.code for e in batch.errors.data] == ["too_many_requests"]


@pytest.mark.parametrize(
    ("options", "words"),
    [
        ({"batch_time": -1}, "batch_time"),
        ({"batch_errored": 1.5}, "batch_errored"),
        ({"batch_errored": 0.6, "batch_expired": 0.6}, "add up"),
        ({"batch_max_requests": 0}, "batch_max_requests"),
    ],
)
def test_bad_batch_options_are_refused(options: dict[str, Any], words: str) -> None:
    with pytest.raises(ConfigError, match=words):
        Emulator(**options)


async def test_openai_files_retrieve_list_and_delete() -> None:
    async with Emulator() as emu:
        client = gpt(emu)
        uploaded = await client.files.create(file=("in.jsonl", openai_file(["a"])), purpose="batch")
        again = await client.files.retrieve(uploaded.id)
        listed = [f.id async for f in client.files.list()]
        deleted = await client.files.delete(uploaded.id)
        with pytest.raises(openai.NotFoundError):
            await client.files.retrieve(uploaded.id)
        await client.close()
    assert (again.filename, again.bytes, again.purpose) == ("in.jsonl", len(openai_file(["a"])), "batch")
    assert listed == [uploaded.id]
    assert deleted.deleted


async def test_anthropic_list_pages_newest_first() -> None:
    async with Emulator() as emu:
        client = claude(emu)
        made = [
            (await client.messages.batches.create(requests=anthropic_requests(["a"]))).id for _ in range(3)
        ]
        first = await client.messages.batches.list(limit=2)
        everything = [b.id async for b in client.messages.batches.list(limit=2)]  # the SDK follows the pages
        await client.close()
    assert [b.id for b in first.data] == made[::-1][:2]
    assert first.has_more
    assert everything == made[::-1]
