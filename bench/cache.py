"""What the response cache costs and saves, end to end through ``connect``.

One run, against the emulator in a process of its own (zero latency, so the call path is
all quorum, the SDK and HTTP on localhost, the cheapest a real call can be):

* ``call_us``: a call through ``connect(...)`` without a cache (median);
* ``hit_us``: the same ``complete`` through ``connect(..., cache=...)`` answered from the
  cache (median): key, lookup, the reply rebuilt;
* ``miss_overhead_us``: what the cache adds to a call that misses (median of the key,
  the failed lookup and the store, timed around the same calls the connection makes);
* ``miss_overhead_pct``: that, as a share of ``call_us``.

Targets: a hit under 300 us; a miss adds under 10% of the call path.

    python bench/cache.py [--json] [--calls N]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import emit, emulator_process, machine
from quorum.engine.connection import connect
from quorum.llm.types import Reply, Request
from quorum.store.cache import ResponseCache

MODEL = "anthropic/claude-haiku-4-5"


def median_us(samples: list[float]) -> float:
    return round(statistics.median(samples) * 1e6, 1)


async def measure(url: str, calls: int, folder: Path) -> dict[str, Any]:
    options = {"base_url": url, "api_key": "bench"}
    plain = connect(MODEL, **options)
    cached = connect(MODEL, cache=folder / "bench.sqlite3", **options)
    cache = cached.cache
    assert cache is not None
    requests = [Request.of(f"question {i}", max_tokens=16) for i in range(calls)]
    for request in requests[:20]:  # warm both connection pools
        await plain.complete(request)
    call_s, miss_s, hit_s = [], [], []
    for request in requests:
        started = time.perf_counter()
        reply = await plain.complete(request)
        call_s.append(time.perf_counter() - started)
        miss_s.append(_miss_cost(cache, cached, request, reply))
    for request in requests:
        await cached.complete(request)  # fill the cache through the connection itself
    for request in requests:
        started = time.perf_counter()
        hit = await cached.complete(request)
        hit_s.append(time.perf_counter() - started)
        assert hit.cost == 0.0
    await plain.aclose()
    await cached.aclose()
    call_us, overhead_us = median_us(call_s), median_us(miss_s)
    return {
        "calls": calls,
        "call_us": call_us,
        "hit_us": median_us(hit_s),
        "miss_overhead_us": overhead_us,
        "miss_overhead_pct": round(100 * overhead_us / call_us, 1),
        "hits_counted": cache.counts.hits,
    }


def _miss_cost(cache: ResponseCache, provider: Any, request: Request, reply: Reply) -> float:
    """The cache's part of a miss: the key and failed lookup before the call, the store after."""
    fresh = Request.of(request.messages[-1].content + " (fresh)", max_tokens=16)
    started = time.perf_counter()
    key, hit = cache.lookup(provider, fresh)
    assert hit is None
    cache.put(key, reply)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--calls", type=int, default=500)
    args = parser.parse_args()
    with emulator_process() as emu, tempfile.TemporaryDirectory() as folder:
        figures = asyncio.run(measure(emu.url, args.calls, Path(folder)))
    figures["machine"] = machine()
    emit(figures, args.json, "response cache: hit, miss overhead and the call path")


if __name__ == "__main__":
    main()
