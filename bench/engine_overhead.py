"""What the engine costs per task, and whether its memory stays O(concurrency).

Each task makes one call through ``quorum.connect(FakeProvider(latency=0.01))``: the
whole call layer (budget check, limits, retry loop, call timeout, accounting) plus the
engine (workers, outcome, events, policy), against a provider that only sleeps. The fake
is given ``calls=KeepNothing()`` so that it does not record every request (its ``calls``
list would otherwise grow with the task count and spoil the memory figure).

Variants, each in a fresh process so that its peak memory is its own:

* ``run``: ``quorum.run(fn, range(100_000))`` at concurrency 1,000. ``run`` returns every
  outcome, so its memory holds 100,000 ``Outcome`` objects at the end.
* ``stream``: ``quorum.stream(fn, generator)`` over 1,000,000 items (and over 100,000 for
  comparison), each outcome dropped once counted: memory should not grow with the count.
* ``engine``: ``quorum.run`` over tasks that only ``asyncio.sleep(latency)``: the engine
  without the call layer or the fake.
* ``floor``: plain asyncio, ``gather`` over every task behind a ``Semaphore``, each task
  one ``asyncio.sleep(latency)``: the cost of the event loop alone, for scale.
* ``baseline``: the interpreter with quorum imported, doing nothing.

``ideal_s`` is ``ceil(tasks / concurrency) * latency``: what an infinitely fast client
would take. Usage: ``python bench/engine_overhead.py [--json] [--tasks N] [--tasks-1m N]
[--no-call-timeout]``; the last runs the calls without ``connect``'s per-call timeout (one
watch per connection), to show what it costs. ``cpu_ratio_to_floor`` is
``cpu_us_per_task / floor_cpu_us_per_task``, both from the same invocation.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import KeepNothing, Timer, child_result, emit, machine, run_child
from quorum.engine import Status, connect, run, stream
from quorum.llm import FakeProvider, Request

PATH = "connect(FakeProvider(latency=0.01, calls=KeepNothing())).complete(request) per task"
CALL_TIMEOUT: float | None = 300.0  # connect()'s default per-call timeout; --no-call-timeout: None


def fake_task(latency: float) -> Any:
    llm = connect(FakeProvider(latency=latency, calls=KeepNothing()), timeout=CALL_TIMEOUT)
    request = Request.of("hello", max_tokens=16)

    async def fn(_: int) -> str:
        return (await llm.complete(request)).text

    return fn


async def child_run(tasks: int, concurrency: int, latency: float) -> dict[str, Any]:
    fn = fake_task(latency)
    with Timer() as t:
        result = await run(fn, range(tasks), concurrency=concurrency)
    return {"tasks": tasks, "ok": result.summary.count(Status.OK), "wall_s": t.wall_s, "cpu_s": t.cpu_s}


async def child_stream(tasks: int, concurrency: int, latency: float) -> dict[str, Any]:
    fn = fake_task(latency)

    def items() -> Iterator[int]:
        yield from range(tasks)

    ok = 0
    with Timer() as t:
        async with stream(fn, items(), concurrency=concurrency) as outcomes:
            async for outcome in outcomes:
                ok += outcome.ok
    return {"tasks": tasks, "ok": ok, "wall_s": t.wall_s, "cpu_s": t.cpu_s}


async def child_floor(tasks: int, concurrency: int, latency: float) -> dict[str, Any]:
    semaphore = asyncio.Semaphore(concurrency)

    async def bounded(i: int) -> int:
        async with semaphore:
            await asyncio.sleep(latency)
            return i

    with Timer() as t:
        done = await asyncio.gather(*(bounded(i) for i in range(tasks)))
    return {"tasks": tasks, "ok": len(done), "wall_s": t.wall_s, "cpu_s": t.cpu_s}


async def child_engine(tasks: int, concurrency: int, latency: float) -> dict[str, Any]:
    async def fn(_: int) -> None:
        await asyncio.sleep(latency)

    with Timer() as t:
        result = await run(fn, range(tasks), concurrency=concurrency)
    return {"tasks": tasks, "ok": result.summary.count(Status.OK), "wall_s": t.wall_s, "cpu_s": t.cpu_s}


async def child_baseline(tasks: int, concurrency: int, latency: float) -> dict[str, Any]:
    return {"tasks": 0, "ok": 0, "wall_s": 0.0, "cpu_s": 0.0}


CHILDREN = {
    "run": child_run,
    "stream": child_stream,
    "engine": child_engine,
    "floor": child_floor,
    "baseline": child_baseline,
}


def measure(variant: str, tasks: int, concurrency: int, latency: float) -> dict[str, Any]:
    args = ["--child", variant, "--tasks", str(tasks), "--concurrency", str(concurrency)]
    if CALL_TIMEOUT is None:
        args.append("--no-call-timeout")
    figures = run_child(__file__, [*args, "--latency", str(latency)])
    if figures["ok"] != tasks:
        raise RuntimeError(f"{variant}: only {figures['ok']} of {tasks} tasks succeeded")
    ideal = math.ceil(tasks / concurrency) * latency if tasks else 0.0
    figures["ideal_s"] = ideal
    figures["ratio_to_ideal"] = round(figures["wall_s"] / ideal, 2) if ideal else None
    figures["cpu_us_per_task"] = round(figures["cpu_s"] / tasks * 1e6, 1) if tasks else None
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--tasks", type=int, default=100_000)
    parser.add_argument("--tasks-1m", type=int, default=1_000_000)
    parser.add_argument("--concurrency", type=int, default=1_000)
    parser.add_argument("--latency", type=float, default=0.01)
    parser.add_argument(
        "--no-call-timeout", action="store_true", help="connect(..., timeout=None): no per-call timeout"
    )
    parser.add_argument("--child", choices=sorted(CHILDREN), help=argparse.SUPPRESS)
    args = parser.parse_args()
    global CALL_TIMEOUT
    if args.no_call_timeout:
        CALL_TIMEOUT = None

    if args.child:
        child = CHILDREN[args.child]
        child_result(asyncio.run(child(args.tasks, args.concurrency, args.latency)))
        return

    n, big, c, latency = args.tasks, args.tasks_1m, args.concurrency, args.latency
    main_run = measure("run", n, c, latency)
    streamed = measure("stream", n, c, latency)
    million = measure("stream", big, c, latency)
    engine = measure("engine", n, c, latency)
    floor = measure("floor", n, c, latency)
    baseline = measure("baseline", 0, c, latency)
    result = {
        "tasks": n,
        "concurrency": c,
        "latency_s": latency,
        "path": PATH,
        "call_timeout_s": CALL_TIMEOUT,
        "wall_s": round(main_run["wall_s"], 2),
        "ideal_s": round(main_run["ideal_s"], 2),
        "ratio_to_ideal": main_run["ratio_to_ideal"],
        "cpu_us_per_task": main_run["cpu_us_per_task"],
        "cpu_ratio_to_floor": round(main_run["cpu_us_per_task"] / floor["cpu_us_per_task"], 2),
        "peak_rss_mb": main_run["peak_rss_mb"],
        "tasks_1m": big,
        "wall_s_1m": round(million["wall_s"], 2),
        "ideal_s_1m": round(million["ideal_s"], 2),
        "ratio_to_ideal_1m": million["ratio_to_ideal"],
        "cpu_us_per_task_1m": million["cpu_us_per_task"],
        "peak_rss_mb_1m": million["peak_rss_mb"],
        "peak_rss_mb_stream_100k": streamed["peak_rss_mb"],
        "cpu_us_per_task_stream_100k": streamed["cpu_us_per_task"],
        "engine_only_cpu_us_per_task": engine["cpu_us_per_task"],
        "engine_only_ratio_to_ideal": engine["ratio_to_ideal"],
        "floor_cpu_us_per_task": floor["cpu_us_per_task"],
        "floor_ratio_to_ideal": floor["ratio_to_ideal"],
        "floor_peak_rss_mb": floor["peak_rss_mb"],
        "baseline_rss_mb": baseline["peak_rss_mb"],
        "machine": machine(),
    }
    emit(result, args.json, "engine overhead (fake provider, no network)")


if __name__ == "__main__":
    main()
