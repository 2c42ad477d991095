"""How close to a provider's rate limits a client runs, and how often it is refused.

The emulator (its own process) enforces a requests-per-minute and an input-tokens-per-
minute limit with continuously refilled buckets that hold one second of refill
(``burst=1``): the limits are enforced over short intervals, as Anthropic says its own
may be ("60 RPM may be enforced as 1 request per second"), so a burst is refused rather
than absorbed by a whole minute's allowance. Over-limit requests get a real 429 with
``retry-after`` and the Anthropic rate-limit headers.

Scale: the limits are real per-minute figures (660 requests and 60,000 input tokens a
minute by default: about 11 requests a second, and about 10 requests a second of the
prompts sent here, 25 to 175 tokens each, so both limits bind by turns), and each client
runs for a fixed window (45 s by default) on an endless supply of prompts. The achieved
rate is measured from the 5th second to the end of the window (the first seconds are
left out because the emulator's buckets start full and would let any client look faster
than the limit), from the successes the client received, and compared with each limit:
``achieved_pct_of_limit`` is the utilisation of the limit that binds (the higher of the
two). ``share_429`` is the share of all responses the emulator sent that were 429s
(calls still in flight when the window closes are abandoned: no response, not counted).

Clients, each in a fresh process, through the official Anthropic SDK (``max_retries=0``):

* ``quorum``: ``quorum.connect("anthropic/...", rpm=..., itpm=...)``, the same limits as
  the emulator, with ``quorum.stream`` over the prompts (concurrency 64, not binding).
* ``cookbook``: the openai-cookbook ``api_request_parallel_processor.py`` algorithm (see
  ``vs_peers.py``), given the same two limits.

Usage: ``python bench/rate_limits.py [--json] [--seconds S] [--rpm N] [--itpm N]``.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import child_result, emit, emulator_process, machine, run_child
from vs_peers import KEY, MAX_TOKENS, MODEL, StatusTracker, process_api_requests

WARM_UP_S = 5.0
LATENCY = "uniform:0.05,0.3"
CONCURRENCY = 64
WORDS = [
    "the",
    "export",
    "button",
    "on",
    "the",
    "billing",
    "page",
    "does",
    "nothing",
    "when",
    "the",
    "invoice",
    "list",
    "is",
    "empty",
]


def prompts(seed: int = 7) -> Iterator[str]:
    """Endless prompts of 100 to 700 characters (25 to 175 input tokens)."""
    rng = random.Random(seed)
    for i in range(10**9):
        size = rng.randint(100, 700)
        text = f"Ticket {i}: "
        while len(text) < size:
            text += rng.choice(WORDS) + " "
        yield text[:size]


def window_figures(completed: list[tuple[float, int]], start: float, seconds: float) -> dict[str, float]:
    """Successes per minute and input tokens per minute from the warm-up to the end."""
    inside = [(at, tokens) for at, tokens in completed if start + WARM_UP_S <= at <= start + seconds]
    span_min = (seconds - WARM_UP_S) / 60.0
    return {
        "requests_per_min": len(inside) / span_min,
        "input_tokens_per_min": sum(tokens for _, tokens in inside) / span_min,
        "successes": len(completed),
    }


async def child_quorum(url: str, seconds: float, rpm: int, itpm: int) -> dict[str, Any]:
    from quorum.engine import connect, stream
    from quorum.llm import Request

    llm = connect(f"anthropic/{MODEL}", base_url=url, api_key=KEY, rpm=rpm, itpm=itpm)

    async def fn(prompt: str) -> int:
        reply = await llm.complete(Request.of(prompt, max_tokens=MAX_TOKENS))
        return reply.usage.prompt_tokens

    completed: list[tuple[float, int]] = []
    start = time.monotonic()
    async with stream(fn, prompts(), concurrency=CONCURRENCY, deadline=seconds) as outcomes:
        async for outcome in outcomes:
            if outcome.ok and outcome.value is not None:
                completed.append((time.monotonic(), outcome.value))
    await llm.aclose()
    return window_figures(completed, start, seconds)


async def child_cookbook(url: str, seconds: float, rpm: int, itpm: int) -> dict[str, Any]:
    import anthropic

    client = anthropic.AsyncAnthropic(base_url=url, api_key=KEY, max_retries=0)
    supply = prompts()
    enough = int((rpm / 60) * seconds * 2) + 100
    requests = [
        {"model": MODEL, "max_tokens": MAX_TOKENS, "messages": [{"role": "user", "content": next(supply)}]}
        for _ in range(enough)
    ]
    tracker = StatusTracker()
    start = time.monotonic()
    with tempfile.TemporaryDirectory() as folder:
        job = process_api_requests(requests, Path(folder) / "results.jsonl", client, rpm, itpm, tracker)
        try:
            await asyncio.wait_for(job, seconds)
        except TimeoutError:
            pass  # the window is over: what completed in it counts
    await client.close()
    return window_figures(tracker.completed, start, seconds)


CHILDREN = {"quorum": child_quorum, "cookbook": child_cookbook}


def measure(variant: str, args: argparse.Namespace) -> dict[str, Any]:
    options = {"latency": LATENCY, "rpm": args.rpm, "itpm": args.itpm, "burst": args.burst, "seed": 3}
    with emulator_process(**options) as emu:
        figures = run_child(
            __file__,
            [
                "--child",
                variant,
                "--url",
                emu.url,
                "--seconds",
                str(args.seconds),
                "--rpm",
                str(args.rpm),
                "--itpm",
                str(args.itpm),
            ],
        )
    return {
        **limit_figures(emu.stats, figures, args.rpm, args.itpm),
        "abandoned_at_end": emu.stats["requests"].get("/v1/messages", {}).get("0", 0),
        "successes": figures["successes"],
    }


def limit_figures(stats: dict[str, Any], figures: dict[str, Any], rpm: int, itpm: int) -> dict[str, Any]:
    """How near a window's throughput came to the emulator's limits, and what it refused."""
    by_status = dict(stats["requests"].get("/v1/messages", {}))
    by_status.pop("0", None)  # in flight when the window closed: no response
    total = sum(by_status.values())
    refused = by_status.get("429", 0)
    request_pct = 100 * figures["requests_per_min"] / rpm
    token_pct = 100 * figures["input_tokens_per_min"] / itpm
    return {
        "achieved_pct_of_limit": round(max(request_pct, token_pct), 1),
        "share_429": round(refused / total, 4) if total else None,
        "requests_pct_of_rpm": round(request_pct, 1),
        "input_tokens_pct_of_itpm": round(token_pct, 1),
        "responses": total,
        "responses_429": refused,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--seconds", type=float, default=45.0, help="the window each client runs for")
    parser.add_argument("--rpm", type=int, default=660)
    parser.add_argument("--itpm", type=int, default=60_000)
    parser.add_argument(
        "--burst", type=float, default=1.0, help="seconds of refill the emulator's buckets hold"
    )
    parser.add_argument("--only", choices=sorted(CHILDREN), help="measure one client only")
    parser.add_argument("--child", choices=sorted(CHILDREN), help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.child:
        child = CHILDREN[args.child]
        child_result(asyncio.run(child(args.url, args.seconds, args.rpm, args.itpm)))
        return

    variants = [args.only] if args.only else list(CHILDREN)
    figures = {variant: measure(variant, args) for variant in variants}
    result: dict[str, Any] = {}
    if "quorum" in figures:
        result.update(figures["quorum"])
    if "cookbook" in figures:
        result.update({f"cookbook_{key}": value for key, value in figures["cookbook"].items()})
    result["config"] = {
        "rpm": args.rpm,
        "itpm": args.itpm,
        "emulator_burst_s": args.burst,
        "window_s": args.seconds,
        "measured_from_s": WARM_UP_S,
        "latency": LATENCY,
        "prompt_tokens": "25-175",
        "quorum_concurrency": CONCURRENCY,
    }
    result["machine"] = machine()
    emit(result, args.json, "rate limits enforced by the emulator")


if __name__ == "__main__":
    main()
