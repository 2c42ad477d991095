"""The same calls, three ways, over real HTTP through the official Anthropic SDK.

N calls (2,000 by default) to the emulator (20 ms latency, its own process, a fresh one
for each variant), each variant in a fresh process of its own so its peak memory is its
own, with one ``anthropic.AsyncAnthropic`` client (``max_retries=0``) each:

Every variant makes one warm-up call before its timing starts (the SDK imports much of
itself lazily on first use, and the first connection is opened then).

* ``quorum``: ``quorum.run(fn, prompts, concurrency=50)``, each task one
  ``llm.complete(request)`` through ``quorum.connect("anthropic/...", rpm=..., itpm=...)``
  (the adapter builds the one SDK client).
* ``chapter``: the chapter's own approach (its ``ParallelWorkflow.run``): every task's
  coroutine built up front, ``asyncio.gather`` over all of them, each behind an
  ``asyncio.Semaphore(50)``, errors kept as strings. No rate limiter: the chapter has none.
* ``cookbook``: the algorithm of openai-cookbook's ``api_request_parallel_processor.py``,
  re-implemented for the Anthropic SDK: one loop that takes the next request (retries
  first), refills two buckets (requests and tokens per minute) that start full, dispatches
  when both have room (one request per turn of the loop, which sleeps 1 ms), charges a
  token estimate that is never settled against the real usage, re-queues a failed request
  at once without backoff (5 attempts), pauses everything 15 s after a rate-limit error,
  caps nothing in flight, and appends each result to a JSONL file as it completes.

The same limits for all that have them: ``rpm`` and ``itpm`` are given to quorum and to the
cookbook's buckets. By default they are what 50 calls in flight of 20 ms can use at most
(150,000 requests a minute), so they do not bind here: this compares what each client
spends to keep the calls flowing. ``rate_limits.py`` is the benchmark where limits bind.

Usage: ``python bench/vs_peers.py [--json] [--calls N] [--latency S] [--concurrency C]``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import Timer, child_result, emit, emulator_process, machine, run_child

MODEL = "claude-haiku-4-5"
MAX_TOKENS = 64
KEY = "bench-key"


def prompts(calls: int) -> list[str]:
    return [
        f"Summarise ticket {i}: the export button does nothing on the billing page." for i in range(calls)
    ]


# -- quorum --------------------------------------------------------------------------------------


async def child_quorum(url: str, calls: int, concurrency: int, rpm: int, itpm: int) -> dict[str, Any]:
    from quorum.engine import Status, connect, run
    from quorum.llm import Request

    llm = connect(f"anthropic/{MODEL}", base_url=url, api_key=KEY, rpm=rpm, itpm=itpm)

    async def fn(prompt: str) -> str:
        return (await llm.complete(Request.of(prompt, max_tokens=MAX_TOKENS))).text

    await fn("warm-up")  # the SDK's lazy imports and first connection: outside the timing
    with Timer() as t:
        result = await run(fn, prompts(calls), concurrency=concurrency)
    await llm.aclose()
    ok = result.summary.count(Status.OK)
    return {"wall_s": t.wall_s, "cpu_s": t.cpu_s, "ok": ok, "failed": calls - ok}


# -- the chapter: gather over every task behind a semaphore ---------------------------------------


async def child_chapter(url: str, calls: int, concurrency: int, rpm: int, itpm: int) -> dict[str, Any]:
    import anthropic

    client = anthropic.AsyncAnthropic(base_url=url, api_key=KEY, max_retries=0)

    # As in the chapter's ParallelWorkflow: _call_llm, _execute_task, run.
    async def call_llm(messages: list[dict[str, str]]) -> str:
        response = await client.messages.create(model=MODEL, max_tokens=MAX_TOKENS, messages=messages)  # type: ignore[arg-type]
        return response.content[0].text  # type: ignore[union-attr]

    async def execute_task(task_id: str, task_data: str) -> dict[str, Any]:
        start = time.time()
        try:
            result = await call_llm([{"role": "user", "content": task_data}])
            return {"task_id": task_id, "success": True, "result": result, "time": time.time() - start}
        except Exception as e:
            return {"task_id": task_id, "success": False, "error": str(e), "time": time.time() - start}

    await call_llm([{"role": "user", "content": "warm-up"}])  # outside the timing, as for all
    with Timer() as t:
        task_items = [(f"task_{i}", task_data) for i, task_data in enumerate(prompts(calls))]
        semaphore = asyncio.Semaphore(concurrency)

        async def bounded_execute(task_id: str, task_data: str) -> dict[str, Any]:
            async with semaphore:
                return await execute_task(task_id, task_data)

        results = await asyncio.gather(
            *[bounded_execute(task_id, task_data) for task_id, task_data in task_items]
        )
    await client.close()
    ok = sum(r["success"] for r in results)
    return {"wall_s": t.wall_s, "cpu_s": t.cpu_s, "ok": ok, "failed": calls - ok}


# -- the cookbook's algorithm ---------------------------------------------------------------------

SECONDS_TO_PAUSE_AFTER_RATE_LIMIT_ERROR = 15
SECONDS_TO_SLEEP_EACH_LOOP = 0.001
MAX_ATTEMPTS = 5


@dataclass
class StatusTracker:
    num_tasks_started: int = 0
    num_tasks_in_progress: int = 0
    num_tasks_succeeded: int = 0
    num_tasks_failed: int = 0
    num_rate_limit_errors: int = 0
    num_api_errors: int = 0
    num_other_errors: int = 0
    time_of_last_rate_limit_error: float = 0.0
    # not in the cookbook: when each success completed and its input tokens, for rate_limits.py
    completed: list[tuple[float, int]] = field(default_factory=list)


@dataclass
class APIRequest:
    task_id: int
    request_json: dict[str, Any]
    token_consumption: int
    attempts_left: int
    result: list[Any] = field(default_factory=list)

    async def call_api(
        self,
        client: Any,
        retry_queue: asyncio.Queue[APIRequest],
        save_filepath: Path,
        status_tracker: StatusTracker,
    ) -> None:
        import anthropic

        error: Any = None
        try:
            response = await client.messages.create(**self.request_json)
        except anthropic.RateLimitError as e:
            status_tracker.time_of_last_rate_limit_error = time.time()
            status_tracker.num_rate_limit_errors += 1
            error = e
        except anthropic.APIStatusError as e:
            status_tracker.num_api_errors += 1
            error = e
        except Exception as e:
            status_tracker.num_other_errors += 1
            error = e
        if error:
            self.result.append(error)
            if self.attempts_left:
                retry_queue.put_nowait(self)  # re-queued at once: no backoff
            else:
                append_to_jsonl([self.request_json, [str(e) for e in self.result]], save_filepath)
                status_tracker.num_tasks_in_progress -= 1
                status_tracker.num_tasks_failed += 1
        else:
            append_to_jsonl([self.request_json, response.model_dump(mode="json")], save_filepath)
            status_tracker.num_tasks_in_progress -= 1
            status_tracker.num_tasks_succeeded += 1
            status_tracker.completed.append((time.monotonic(), response.usage.input_tokens))


def append_to_jsonl(data: Any, filename: Path) -> None:
    with open(filename, "a") as f:
        f.write(json.dumps(data) + "\n")


def num_tokens_consumed_from_request(request_json: dict[str, Any]) -> int:
    """The cookbook's estimate: prompt tokens plus 4 per message and 2 of framing, with
    four characters a token standing in for its tokenizer. (The cookbook also adds the
    completion budget, because OpenAI's tokens-per-minute limit counts it; Anthropic's
    input-token limit does not, so this port leaves it out.)"""
    num_tokens = 0
    for message in request_json["messages"]:
        num_tokens += 4 + len(message["content"]) // 4
    return num_tokens + 2


async def process_api_requests(
    requests: list[dict[str, Any]],
    save_filepath: Path,
    client: Any,
    max_requests_per_minute: float,
    max_tokens_per_minute: float,
    status_tracker: StatusTracker | None = None,
) -> StatusTracker:
    queue_of_requests_to_retry: asyncio.Queue[APIRequest] = asyncio.Queue()
    task_id_generator = iter(range(len(requests) + 1))
    status_tracker = status_tracker or StatusTracker()
    next_request: APIRequest | None = None

    available_request_capacity = max_requests_per_minute  # the buckets start full
    available_token_capacity = max_tokens_per_minute
    last_update_time = time.time()
    file_not_finished = True
    lines = iter(requests)

    while True:
        if next_request is None:
            if not queue_of_requests_to_retry.empty():
                next_request = queue_of_requests_to_retry.get_nowait()
            elif file_not_finished:
                try:
                    request_json = next(lines)
                    next_request = APIRequest(
                        task_id=next(task_id_generator),
                        request_json=request_json,
                        token_consumption=num_tokens_consumed_from_request(request_json),
                        attempts_left=MAX_ATTEMPTS,
                    )
                    status_tracker.num_tasks_started += 1
                    status_tracker.num_tasks_in_progress += 1
                except StopIteration:
                    file_not_finished = False

        current_time = time.time()
        seconds_since_update = current_time - last_update_time
        available_request_capacity = min(
            available_request_capacity + max_requests_per_minute * seconds_since_update / 60.0,
            max_requests_per_minute,
        )
        available_token_capacity = min(
            available_token_capacity + max_tokens_per_minute * seconds_since_update / 60.0,
            max_tokens_per_minute,
        )
        last_update_time = current_time

        if next_request:
            next_request_tokens = next_request.token_consumption
            if available_request_capacity >= 1 and available_token_capacity >= next_request_tokens:
                available_request_capacity -= 1
                available_token_capacity -= next_request_tokens
                next_request.attempts_left -= 1
                asyncio.create_task(  # noqa: RUF006 - the cookbook keeps no reference
                    next_request.call_api(client, queue_of_requests_to_retry, save_filepath, status_tracker)
                )
                next_request = None

        if status_tracker.num_tasks_in_progress == 0:
            break

        await asyncio.sleep(SECONDS_TO_SLEEP_EACH_LOOP)

        seconds_since_rate_limit_error = time.time() - status_tracker.time_of_last_rate_limit_error
        if seconds_since_rate_limit_error < SECONDS_TO_PAUSE_AFTER_RATE_LIMIT_ERROR:
            remaining_seconds_to_pause = (
                SECONDS_TO_PAUSE_AFTER_RATE_LIMIT_ERROR - seconds_since_rate_limit_error
            )
            await asyncio.sleep(remaining_seconds_to_pause)
    return status_tracker


async def child_cookbook(url: str, calls: int, concurrency: int, rpm: int, itpm: int) -> dict[str, Any]:
    import anthropic

    client = anthropic.AsyncAnthropic(base_url=url, api_key=KEY, max_retries=0)
    requests = [
        {"model": MODEL, "max_tokens": MAX_TOKENS, "messages": [{"role": "user", "content": p}]}
        for p in prompts(calls)
    ]
    await client.messages.create(**requests[0])  # warm-up outside the timing, as for all
    with tempfile.TemporaryDirectory() as folder, Timer() as t:
        tracker = await process_api_requests(requests, Path(folder) / "results.jsonl", client, rpm, itpm)
    await client.close()
    return {
        "wall_s": t.wall_s,
        "cpu_s": t.cpu_s,
        "ok": tracker.num_tasks_succeeded,
        "failed": tracker.num_tasks_failed,
        "rate_limit_errors": tracker.num_rate_limit_errors,
    }


CHILDREN = {"quorum": child_quorum, "chapter": child_chapter, "cookbook": child_cookbook}


def measure(variant: str, args: argparse.Namespace) -> dict[str, Any]:
    with emulator_process(latency=args.latency) as emu:
        figures = run_child(
            __file__,
            [
                "--child",
                variant,
                "--url",
                emu.url,
                "--calls",
                str(args.calls),
                "--concurrency",
                str(args.concurrency),
                "--rpm",
                str(args.rpm),
                "--itpm",
                str(args.itpm),
            ],
        )
    figures["server_max_in_flight"] = emu.stats["max_in_flight"]
    figures["server_requests"] = sum(sum(by.values()) for by in emu.stats["requests"].values()) - 1
    if figures["ok"] != args.calls:
        raise RuntimeError(f"{variant}: {figures['ok']} of {args.calls} calls succeeded: {figures}")
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--calls", type=int, default=2_000)
    parser.add_argument("--latency", type=float, default=0.02)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--rpm", type=int, default=None, help="default: concurrency / latency a minute")
    parser.add_argument("--itpm", type=int, default=None, help="default: rpm x 100 tokens")
    parser.add_argument("--child", choices=sorted(CHILDREN), help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.rpm = args.rpm or round(60 * args.concurrency / args.latency)
    args.itpm = args.itpm or args.rpm * 100

    if args.child:
        child = CHILDREN[args.child]
        child_result(asyncio.run(child(args.url, args.calls, args.concurrency, args.rpm, args.itpm)))
        return

    figures = {variant: measure(variant, args) for variant in CHILDREN}
    ideal = math.ceil(args.calls / args.concurrency) * args.latency
    result: dict[str, Any] = {
        "calls": args.calls,
        "latency_s": args.latency,
        "concurrency": args.concurrency,
        "rpm": args.rpm,
        "itpm": args.itpm,
        "ideal_s": round(ideal, 2),
    }
    for variant, f in figures.items():
        result[f"{variant}_s"] = round(f["wall_s"], 2)
    for variant, f in figures.items():
        result[f"{variant}_peak_rss_mb"] = f["peak_rss_mb"]
    for variant, f in figures.items():
        result[f"{variant}_cpu_ms_per_call"] = round(f["cpu_s"] / args.calls * 1000, 3)
    for variant, f in figures.items():
        result[f"{variant}_server_max_in_flight"] = f["server_max_in_flight"]
    result["machine"] = machine()
    emit(
        result,
        args.json,
        f"{args.calls} calls over HTTP, Anthropic SDK, emulator at {args.latency * 1000:g} ms",
    )


if __name__ == "__main__":
    main()
