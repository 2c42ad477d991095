"""How far a run's spend goes past its budget when many calls are in flight at once.

On the emulator (in-process, on the wire through the official Anthropic SDK), ``quorum.run``
sends 200 tasks at concurrency 32 under a dollar cap and, separately, a token cap. Every
answer is the same size (about 400 output tokens at ``max_tokens=512``), so about ten
calls fit in the default caps. Without reservations every call in flight passes the
budget check before the first one is billed, and the spend reaches several times the cap;
with them, each call reserves its estimated cost (input estimate plus ``max_tokens``,
priced) before it is sent.

Printed per cap: ``cap``, ``spent``, ``calls`` (answered), ``overshoot`` (spent minus
cap, never below zero), ``overshoot_in_calls`` (the overshoot divided by one call's real
cost) and ``one_call`` (that cost).

Usage: ``python bench/budget_overshoot.py [--json] [--tasks N] [--concurrency N]
[--dollars D] [--tokens T]``.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import emit, machine
from quorum.engine import Budget, Status, connect, run
from quorum.llm import Request
from quorum.llm.anthropic import AnthropicProvider
from quorum.testing import Emulator

MODEL = "claude-sonnet-5-5"
MAX_TOKENS = 512
ANSWER = "word " * 320  # 1,600 characters: about 400 output tokens
LATENCY = "uniform:0.05,0.15"


async def spend(cap: Budget, tasks: int, concurrency: int) -> dict[str, Any]:
    rules = [{"match": ".", "reply": ANSWER}]
    async with Emulator(rules, latency=LATENCY, seed=1) as emu:
        provider = AnthropicProvider(MODEL, api_key="x", base_url=emu.anthropic_base_url)
        llm = connect(provider)

        async def task(i: int) -> str:
            return (await llm.complete(Request.of(f"question {i}", max_tokens=MAX_TOKENS))).text

        result = await run(task, range(tasks), concurrency=concurrency, budget=cap)
        await llm.aclose()
    answered = result.summary.count(Status.OK)
    if cap.dollars is not None:
        limit, spent = cap.dollars, cap.spent_dollars
    else:
        limit, spent = float(cap.tokens or 0), float(cap.spent_tokens)
    one_call = spent / answered if answered else 0.0
    overshoot = max(0.0, spent - limit)
    return {
        "cap": limit,
        "spent": round(spent, 6),
        "calls": answered,
        "overshoot": round(overshoot, 6),
        "overshoot_in_calls": round(overshoot / one_call, 2) if one_call else None,
        "one_call": round(one_call, 6),
    }


async def measure(args: argparse.Namespace) -> dict[str, Any]:
    dollars = await spend(Budget(dollars=args.dollars), args.tasks, args.concurrency)
    tokens = await spend(Budget(tokens=args.tokens), args.tasks, args.concurrency)
    return {
        "tasks": args.tasks,
        "concurrency": args.concurrency,
        "max_tokens": MAX_TOKENS,
        "dollar_cap": dollars,
        "token_cap": tokens,
        "machine": machine(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--tasks", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--dollars", type=float, default=0.05)
    parser.add_argument("--tokens", type=int, default=5000)
    args = parser.parse_args()
    emit(asyncio.run(measure(args)), args.json, "budget overshoot (emulator, concurrency 32)")


if __name__ == "__main__":
    main()
