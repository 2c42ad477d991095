"""Scale-out on a local Ray cluster against the emulator: speed and shared limits.

The emulator runs in a process of its own (``_common.emulator_process``); every client
talks to it through the official Anthropic SDK (``max_retries=0``; quorum retries).

Three measurements:

* **speedup** (no limit binding, 20 ms latency): ``calls`` calls in one process
  (``quorum.stream`` over ``quorum.connect``, a fresh process, concurrency ``C``) against
  the same calls through ``RayExecutor(workers=N, concurrency=C)`` on a local cluster.
  ``wall_s_1`` and ``wall_s_n`` are the wall times (the cluster's start-up, about 5 s,
  and the workers' start are left out: the clock starts when the workers answered);
  ``speedup = wall_s_1 / wall_s_n``. ``wall_s_cluster_1`` is the same on the cluster with
  one worker: how the cluster itself scales, apart from what it costs over one process.
  ``wall_s_run_n`` is the same calls on ``N`` workers through the driver's path of
  ``run(llm.complete, ..., executor=...)`` (a task per call at the driver, a
  ``RemoteConnection``): what that layer costs over ``executor.stream`` (``wall_s_n``).
  ``wall_s_independent_n`` is ``N`` plain processes sharing the calls with no
  coordination, started together, and ``speedup_ceiling`` its speedup: the most this
  machine allows (the clients, the emulator and Ray share its cores), so ``speedup`` is
  read against it.
* **a fault**: a quarter of the calls on the cluster, one worker killed with ``ray.kill``
  after a fifth of them came back. ``lost`` and ``duplicated`` count items without an
  outcome and items with more than one; ``fault_redispatched`` the items sent again.
* **limits** (enforced by the emulator with one-second buckets: ``burst=1``): ``workers``
  workers share one account's ``rpm`` and ``itpm`` through the limiter actor, on an
  endless supply of prompts of 25 to 175 tokens (so both limits bind by turns), for a
  ``--seconds`` window. ``achieved_pct_of_limit`` is the binding limit's utilisation from
  the 5th second to the end (the buckets start full), counted from successes received
  at the driver; ``share_429`` is the share of the emulator's responses that were 429s.

Usage: ``python bench/ray_scale.py [--json] [--workers N] [--calls N] [--seconds S]``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import child_result, emit, emulator_process, machine, run_child
from rate_limits import WARM_UP_S, limit_figures, prompts, window_figures
from vs_peers import KEY, MAX_TOKENS, MODEL

SPEED_LATENCY = 0.02
LIMIT_LATENCY = "uniform:0.05,0.3"


def tickets(calls: int) -> list[str]:
    return [
        f"Summarise ticket {i}: the export button does nothing on the billing page." for i in range(calls)
    ]


async def one_process(
    url: str, calls: int, concurrency: int, start_at: float | None = None
) -> dict[str, Any]:
    from quorum.engine import connect, stream
    from quorum.llm import Request

    llm = connect(f"anthropic/{MODEL}", base_url=url, api_key=KEY)

    async def fn(prompt: str) -> int:
        reply = await llm.complete(Request.of(prompt, max_tokens=MAX_TOKENS))
        return reply.usage.output_tokens

    await fn("warm-up")
    if start_at is not None:  # several processes, started together once all are warm
        await asyncio.sleep(max(0.0, start_at - time.time()))
    ok = 0
    started = time.perf_counter()
    async with stream(fn, tickets(calls), concurrency=concurrency) as outcomes:
        async for outcome in outcomes:
            ok += outcome.ok
    wall = time.perf_counter() - started
    await llm.aclose()
    return {"wall_s": wall, "ok": ok}


async def on_cluster(
    url: str, calls: int, workers: int, concurrency: int, kill_after: int | None = None
) -> dict[str, Any]:
    import ray

    from quorum.engine.cluster import ConnectionSpec, RayExecutor

    executor = RayExecutor(workers=workers, concurrency=concurrency)
    spec = ConnectionSpec(f"anthropic/{MODEL}", {"base_url": url, "api_key": KEY})
    items = [{"prompt": text, "max_tokens": MAX_TOKENS} for text in tickets(calls)]
    seen: Counter[str] = Counter()
    ok = 0
    stream = executor.stream(items, llm=spec)
    async with stream:
        started = time.perf_counter()  # workers are up: the cluster's start is not timed
        async for outcome in stream:
            seen[outcome.id] += 1
            ok += outcome.ok
            if len(seen) == kill_after:
                ray.kill(stream.worker_handles()[0])
        wall = time.perf_counter() - started
    return {
        "wall_s": wall,
        "ok": ok,
        "lost": calls - len(seen),
        "duplicated": sum(n - 1 for n in seen.values()),
        "redispatched": stream.stats.redispatched,
    }


async def run_on_cluster(url: str, calls: int, workers: int, concurrency: int) -> dict[str, Any]:
    """The driver's path of ``run(llm.complete, ..., executor=...)``: a task per call at the
    driver through a ``RemoteConnection`` (workers started by a warm-up call, not timed)."""
    import quorum
    from quorum.engine.cluster import RayExecutor, RemoteConnection
    from quorum.engine.cluster.remote import in_flight_for
    from quorum.llm import Request

    executor = RayExecutor(workers=workers, concurrency=concurrency)
    llm = quorum.connect(f"anthropic/{MODEL}", base_url=url, api_key=KEY)
    async with RemoteConnection(executor, llm) as remote:
        await remote.complete(Request.of("warm-up", max_tokens=MAX_TOKENS))
        requests = [Request.of(text, max_tokens=MAX_TOKENS) for text in tickets(calls)]
        started = time.perf_counter()
        result = await quorum.run(remote.complete, requests, concurrency=in_flight_for(executor))
        wall = time.perf_counter() - started
    return {"wall_s": wall, "ok": result.summary.counts.get("ok", 0)}


async def limits_on_cluster(url: str, args: argparse.Namespace) -> dict[str, Any]:
    from quorum.engine.cluster import ConnectionSpec, RayExecutor

    executor = RayExecutor(workers=args.workers, concurrency=args.concurrency)
    spec = ConnectionSpec(
        f"anthropic/{MODEL}", {"base_url": url, "api_key": KEY}, rpm=args.rpm, itpm=args.itpm
    )
    items = ({"prompt": text, "max_tokens": MAX_TOKENS} for text in prompts())
    completed: list[tuple[float, int]] = []
    stream = executor.stream(items, llm=spec)
    async with stream:
        started = time.monotonic()
        async for outcome in stream:
            now = time.monotonic()
            if outcome.ok and outcome.value is not None:
                completed.append((now, outcome.value.usage.prompt_tokens))
            if now - started >= args.seconds:
                break
        workers_used = len(stream.stats.by_worker)
    leases = executor.limiter_stats(spec)
    executor.shutdown()
    return {
        **window_figures(completed, started, args.seconds),
        "workers_used": workers_used,
        "leases": leases.get("leases", 0),
    }


def independent_processes(url: str, args: argparse.Namespace) -> float:
    """The wall time of ``speed_workers`` plain processes sharing the calls with no
    coordination at all, started together: the most this machine allows, since the
    clients, the emulator and Ray share its cores."""
    share = args.calls // args.speed_workers
    start_at = time.time() + 8.0  # after every child has imported and warmed up
    argv = ["--child", "one", "--url", url, "--calls", str(share), "--concurrency", str(args.concurrency)]
    child_argv = [*argv, "--start-at", str(start_at)]
    with ThreadPoolExecutor(args.speed_workers) as pool:
        children = list(pool.map(lambda _n: run_child(__file__, child_argv), range(args.speed_workers)))
    return max(child["wall_s"] for child in children)


def measure_speed(args: argparse.Namespace) -> dict[str, Any]:
    with emulator_process(latency=SPEED_LATENCY, seed=3) as emu:
        single = run_child(__file__, ["--child", "one", "--url", emu.url, *_common_args(args)])
    with emulator_process(latency=SPEED_LATENCY, seed=3) as emu:
        ceiling = independent_processes(emu.url, args)
    with emulator_process(latency=SPEED_LATENCY, seed=3) as emu:
        many = asyncio.run(on_cluster(emu.url, args.calls, args.speed_workers, args.concurrency))
    with emulator_process(latency=SPEED_LATENCY, seed=3) as emu:
        alone = asyncio.run(on_cluster(emu.url, args.calls, 1, args.concurrency))
    with emulator_process(latency=SPEED_LATENCY, seed=3) as emu:
        driven = asyncio.run(run_on_cluster(emu.url, args.calls, args.speed_workers, args.concurrency))
    return {
        "wall_s_run_n": round(driven["wall_s"], 2),
        "ok_run_n": driven["ok"],
        "wall_s_cluster_1": round(alone["wall_s"], 2),
        "wall_s_1": round(single["wall_s"], 2),
        "wall_s_n": round(many["wall_s"], 2),
        "speedup": round(single["wall_s"] / many["wall_s"], 2),
        "wall_s_independent_n": round(ceiling, 2),
        "speedup_ceiling": round(single["wall_s"] / ceiling, 2),
        "ok_1": single["ok"],
        "ok_n": many["ok"],
    }


def measure_fault(args: argparse.Namespace) -> dict[str, Any]:
    """The same calls with one of the workers killed (``ray.kill``) part-way through."""
    calls = args.calls // 4
    with emulator_process(latency=SPEED_LATENCY, seed=3) as emu:
        run = asyncio.run(on_cluster(emu.url, calls, args.speed_workers, args.concurrency, calls // 5))
    return {
        "fault_calls": calls,
        "fault_killed_after": calls // 5,
        "lost": run["lost"],
        "duplicated": run["duplicated"],
        "fault_redispatched": run["redispatched"],
        "fault_ok": run["ok"],
    }


def measure_limits(args: argparse.Namespace) -> dict[str, Any]:
    options = {"latency": LIMIT_LATENCY, "rpm": args.rpm, "itpm": args.itpm, "burst": 1.0, "seed": 3}
    with emulator_process(**options) as emu:
        figures = asyncio.run(limits_on_cluster(emu.url, args))
    return {
        **limit_figures(emu.stats, figures, args.rpm, args.itpm),
        "workers_used": figures["workers_used"],
        "leases": figures["leases"],
    }


def _common_args(args: argparse.Namespace) -> list[str]:
    return ["--calls", str(args.calls), "--concurrency", str(args.concurrency)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--workers", type=int, default=4, help="workers sharing the enforced limits")
    parser.add_argument("--speed-workers", type=int, default=2, help="workers for the speedup run")
    parser.add_argument("--calls", type=int, default=4000, help="calls in the speedup runs")
    parser.add_argument("--concurrency", type=int, default=64, help="calls in flight per process")
    parser.add_argument("--seconds", type=float, default=40.0, help="the window of the limits run")
    parser.add_argument("--rpm", type=int, default=3000)
    parser.add_argument("--itpm", type=int, default=300_000)
    parser.add_argument("--only", choices=["speed", "limits"])
    parser.add_argument("--child", choices=["one"], help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    parser.add_argument("--start-at", type=float, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.child:
        child_result(asyncio.run(one_process(args.url, args.calls, args.concurrency, args.start_at)))
        return

    import ray

    ray.init(num_cpus=os.cpu_count(), include_dashboard=False, logging_level="ERROR", log_to_driver=False)
    load_before = os.getloadavg()[0]
    result: dict[str, Any] = {"workers": args.workers, "calls": args.calls}
    if args.only in (None, "speed"):
        result.update(measure_speed(args))
        result.update(measure_fault(args))
    if args.only in (None, "limits"):
        result.update(measure_limits(args))
    result["cores"] = os.cpu_count()
    # The machine may be shared: a load average above the core count means other work
    # took CPU from the clients measured here, the speedup above all.
    result["load_average_1m"] = [round(load_before, 2), round(os.getloadavg()[0], 2)]
    result["config"] = {
        "speed_workers": args.speed_workers,
        "concurrency_per_process": args.concurrency,
        "speed_latency_s": SPEED_LATENCY,
        "limits": {"rpm": args.rpm, "itpm": args.itpm, "emulator_burst_s": 1.0},
        "limits_latency": LIMIT_LATENCY,
        "window_s": args.seconds,
        "measured_from_s": WARM_UP_S,
        "prompt_tokens": "25-175",
    }
    result["machine"] = machine()
    ray.shutdown()
    emit(result, args.json, "quorum on a local Ray cluster against the emulator")


if __name__ == "__main__":
    main()
