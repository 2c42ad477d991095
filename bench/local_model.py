"""Throughput of the embedded model: one instance with all threads, or one per core?

Runs the same schema-constrained moderation votes, all at once with ``asyncio.gather``,
on a pool of 1 instance using 2 threads and on a pool of N single-threaded instances
(N = CPU count), and reports generated tokens per second and wall time for each.
Models are loaded before the clock starts; each instance still reads the prompt once.

    python bench/local_model.py [--json] [--votes 8]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time
from dataclasses import dataclass

from quorum.llm.local import LocalProvider
from quorum.llm.types import Request

MODERATION = {
    "type": "object",
    "properties": {
        "decision": {"enum": ["acceptable", "unacceptable", "needs_review"]},
        "confidence": {"enum": ["low", "medium", "high"]},
        "reasoning": {"type": "string", "maxLength": 100},
    },
    "required": ["decision", "confidence", "reasoning"],
    "additionalProperties": False,
}
SYSTEM = "You are a content moderator. Judge whether the comment may be published."
COMMENT = "Comment: 'This library saved my weekend, though the docs could use more examples.'"


@dataclass(frozen=True)
class Run:
    tokens: int
    wall_s: float

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.wall_s


def vote(seed: int) -> Request:
    return Request.of(COMMENT, system=SYSTEM, schema=MODERATION, temperature=0.8, seed=seed)


async def measure(pool_size: int, threads: int, votes: int) -> Run:
    """Wall time and generated tokens for ``votes`` concurrent votes on one pool."""
    llm = LocalProvider(pool_size=pool_size, threads=threads)
    try:
        warm = Request.of("Hi", max_tokens=1, temperature=0)  # loads every instance
        await asyncio.gather(*(llm.complete(warm) for _ in range(pool_size)))
        started = time.perf_counter()
        replies = await asyncio.gather(*(llm.complete(vote(seed)) for seed in range(votes)))
        wall = time.perf_counter() - started
    finally:
        await llm.aclose()
    return Run(sum(r.usage.output_tokens for r in replies), wall)


async def main(votes: int) -> dict[str, float | int]:
    cores = os.cpu_count() or 1
    one = await measure(pool_size=1, threads=min(2, cores), votes=votes)
    many = await measure(pool_size=cores, threads=1, votes=votes)
    return {
        "tokens_per_s_pool1": round(one.tokens_per_s, 1),
        "tokens_per_s_poolN": round(many.tokens_per_s, 1),
        "speedup": round(many.tokens_per_s / one.tokens_per_s, 2),
        "wall_s_pool1": round(one.wall_s, 2),
        "wall_s_poolN": round(many.wall_s, 2),
        "votes": votes,
        "pool_n": cores,
    }


def report(result: dict[str, float | int]) -> str:
    n = result["pool_n"]
    return "\n".join(
        [
            f"{result['votes']} schema-constrained votes, run concurrently",
            f"  pool of 1 (2 threads):  {result['tokens_per_s_pool1']:>7} tokens/s"
            f"  {result['wall_s_pool1']:>6} s",
            f"  pool of {n} (1 thread):  {result['tokens_per_s_poolN']:>7} tokens/s"
            f"  {result['wall_s_poolN']:>6} s",
            f"  speedup: {result['speedup']}x",
        ]
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--votes", type=int, default=8, help="concurrent votes per pool")
    args = parser.parse_args()
    outcome = asyncio.run(main(args.votes))
    print(json.dumps(outcome) if args.json else report(outcome))
