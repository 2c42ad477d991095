"""How many zero-latency requests per second the emulator serves.

The emulator must never be what limits a benchmark of quorum itself, so this measures
it from outside: it starts ``quorum emulate --port 0`` in a subprocess (one process, one
event loop: one core), reads the port it prints, and drives N requests through one
connection pool with C in flight, first with a bare ``httpx2.AsyncClient`` POSTing
``/v1/messages`` and then through the official ``anthropic`` SDK. On Linux it also reads
the server's CPU time, so ``server_requests_per_cpu_s`` says what one core could serve
if the client were not the bottleneck.

    python bench/emulator.py [--json] [--requests N] [--concurrency C]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import statistics
import subprocess
import sys
import time
import warnings
from collections.abc import Awaitable, Callable
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import anthropic
import httpx2

MODEL = "claude-haiku-4-5"
BODY = {"model": MODEL, "max_tokens": 64, "messages": [{"role": "user", "content": "ping"}]}
HEADERS = {"x-api-key": "bench", "anthropic-version": "2023-06-01"}
Call = Callable[[], Awaitable[bool]]


@contextmanager
def emulator_process() -> Any:
    """``quorum emulate --port 0`` in a subprocess; yields (base URL, pid)."""
    src = str(Path(__file__).resolve().parents[1] / "src")
    env = {**os.environ, "PYTHONPATH": src + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "quorum.cli.emulate", "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=env,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        found = re.search(r"listening on (http://\S+)", line)
        if found is None:
            raise SystemExit(f"the emulator did not start; it printed {line!r}")
        yield found.group(1), proc.pid
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of a process, from /proc (None where there is no /proc)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def drive(call: Call, requests: int, concurrency: int) -> dict[str, Any]:
    """Run ``requests`` calls with ``concurrency`` workers; time them all and each one."""
    remaining = iter(range(requests))
    latencies: list[float] = []
    failures = 0

    async def worker() -> None:
        nonlocal failures
        for _ in remaining:
            started = time.perf_counter()
            failures += not await call()
            latencies.append(time.perf_counter() - started)

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed = time.perf_counter() - started
    latencies.sort()
    return {
        "requests_per_s": round(requests / elapsed, 1),
        "failures": failures,
        "p50_ms": round(statistics.median(latencies) * 1000, 2),
        "p99_ms": round(latencies[int(len(latencies) * 0.99) - 1] * 1000, 2),
    }


async def bench_httpx(url: str, requests: int, concurrency: int) -> dict[str, Any]:
    limits = httpx2.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx2.AsyncClient(base_url=url, limits=limits, headers=HEADERS) as client:

        async def call() -> bool:
            response = await client.post("/v1/messages", json=BODY)
            return response.status_code == 200

        await drive(call, min(200, requests), concurrency)  # warm up: open the pool
        return await drive(call, requests, concurrency)


async def bench_sdk(url: str, requests: int, concurrency: int) -> dict[str, Any]:
    client = anthropic.AsyncAnthropic(base_url=url, api_key="bench", max_retries=0)

    async def call() -> bool:
        message = await client.messages.create(**BODY)  # type: ignore[call-overload]
        return message.stop_reason == "end_turn"

    try:
        await drive(call, min(200, requests), concurrency)
        return await drive(call, requests, concurrency)
    finally:
        await client.close()


async def run(requests: int, concurrency: int) -> dict[str, Any]:
    with emulator_process() as (url, pid):
        cpu_before = cpu_seconds(pid)
        raw = await bench_httpx(url, requests, concurrency)
        cpu_after = cpu_seconds(pid)
        sdk = await bench_sdk(url, requests, concurrency)
    result: dict[str, Any] = {
        "requests_per_s": raw["requests_per_s"],
        "requests": requests,
        "concurrency": concurrency,
        "p50_ms": raw["p50_ms"],
        "p99_ms": raw["p99_ms"],
        "failures": raw["failures"],
        "sdk_requests_per_s": sdk["requests_per_s"],
        "sdk_p50_ms": sdk["p50_ms"],
        "sdk_failures": sdk["failures"],
    }
    if cpu_before is not None and cpu_after is not None and cpu_after > cpu_before:
        # Warm-up requests ran inside this window too: count them, so the figure is honest.
        served = requests + min(200, requests)
        result["server_requests_per_cpu_s"] = round(served / (cpu_after - cpu_before), 1)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--requests", type=int, default=2000, help="requests per client (2000)")
    parser.add_argument("--concurrency", type=int, default=32, help="requests in flight (32)")
    args = parser.parse_args()
    warnings.simplefilter("ignore", DeprecationWarning)
    result = asyncio.run(run(args.requests, args.concurrency))
    if args.json:
        print(json.dumps(result))
        return
    for key, value in result.items():
        print(f"{key:28} {value}")


if __name__ == "__main__":
    main()
