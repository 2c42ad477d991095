"""Provider batch APIs: what they save, and what kills cost.

The same requests are priced online and run through a batch API, whose driver is killed
at random steps (before ``create``, right after it, while polling, part-way through a
download, before the intent is closed) and re-run until the job is done. A kill is
simulated in-process: an exception nobody catches, raised at the chosen step, after which
a new driver opens the journal file again, as a new process would.

Figures: ``items``; ``batches_created`` (at the provider); ``cost_online`` (the same
requests answered online) and ``cost_batch`` (what the job's results cost, resubmissions
and online fallbacks included); ``saving_pct``; ``kills``; ``duplicate_batches`` (batches
created at the provider that no journaled intent owns, or two for one intent: paid twice);
``lost`` (items without a result at the end); ``duplicated`` (results delivered more than
once across the runs). Targets: ``saving_pct`` 50 less any resubmission; zero for the
last three.

The batch API is the in-memory one (``quorum.llm.batches.fake``) on a virtual clock, so
a batch's 30 minutes pass at once; the SDK adapters are checked on the wire by
``tests/test_batch_api_wire.py``.

Usage: ``python bench/batch_api.py [--json] [--items N] [--kills K] [--error-share F]
[--expire-share F] [--seed N]``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import tempfile
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

from quorum.engine.batch_ledger import BatchLedger
from quorum.engine.batches import BatchRunner
from quorum.llm.batches.base import BatchApi, BatchItem, BatchStatus, Intent, ItemResult
from quorum.llm.batches.fake import FakeBatches
from quorum.llm.fake import FakeProvider
from quorum.llm.pricing import price_of
from quorum.llm.types import Request
from quorum.testing import VirtualClock

MODEL = "claude-haiku-4-5"
KINDS = ("before_create", "after_create", "polling", "downloading", "before_close")


class Killed(BaseException):
    """A kill: nothing catches it, nothing after it runs."""


class Killer:
    """The batch API, killed at the first ``kind`` step it takes: ``before_create``,
    ``after_create``, ``polling`` or ``downloading`` (after ``after`` results were read)."""

    def __init__(self, api: BatchApi, kind: str, after: int) -> None:
        self.api, self.kind, self.after = api, kind, after
        self.name, self.model, self.limits = api.name, api.model, api.limits
        self.item_size = api.item_size

    async def create(self, intent: Intent, items: Sequence[BatchItem]) -> BatchStatus:
        if self.kind == "before_create":
            raise Killed
        status = await self.api.create(intent, items)
        if self.kind == "after_create":
            raise Killed
        return status

    async def retrieve(self, batch_id: str) -> BatchStatus:
        if self.kind == "polling":
            raise Killed
        return await self.api.retrieve(batch_id)

    async def cancel(self, batch_id: str) -> BatchStatus:
        return await self.api.cancel(batch_id)

    async def find(self, intent: Intent, claimed: frozenset[str] = frozenset()) -> BatchStatus | None:
        return await self.api.find(intent, claimed)

    async def results(self, batch_id: str, items: Sequence[BatchItem]) -> AsyncIterator[ItemResult]:
        read = 0
        async for result in self.api.results(batch_id, items):
            if self.kind == "downloading" and read >= min(self.after, len(items) - 1):
                raise Killed
            read += 1
            yield result

    async def aclose(self) -> None:
        return None


class ClosingKilled(BatchLedger):
    def close_intent(self, tag: str, retry: Any) -> None:
        raise Killed


def requests(n: int) -> list[BatchItem]:
    rng = random.Random(7)
    words = ["the", "a", "report", "ticket", "review", "item", "answer", "question", "reason", "data"]
    prompts = (" ".join(rng.choices(words, k=rng.randint(20, 120))) for _ in range(n))
    return [BatchItem(f"item-{i}", Request.of(p, max_tokens=64)) for i, p in enumerate(prompts)]


async def online_cost(items: list[BatchItem]) -> float:
    provider = FakeProvider(model=MODEL, price=price_of(MODEL))
    total = 0.0
    for item in items:
        total += (await provider.complete(item.request)).cost or 0.0
    return total


async def run(args: argparse.Namespace) -> dict[str, Any]:
    clock = VirtualClock()
    provider = FakeProvider(model=MODEL, price=price_of(MODEL))
    api = FakeBatches(
        provider,
        now=clock.now,
        time_to_end=1800,
        error_share=args.error_share,
        expire_share=args.expire_share,
        seed=11,
    )
    items = requests(args.items)
    delivered: Counter[str] = Counter()
    rng = random.Random(args.seed)
    kills = 0
    where: Counter[str] = Counter()
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "job.journal"
        while True:
            # Kill at each kind of step in turn; a run that is not killed finishes the job.
            kind = KINDS[kills % len(KINDS)] if kills < args.kills else ""
            used: Any = Killer(api, kind, rng.randrange(args.items)) if kind else api
            with (ClosingKilled if kind == "before_close" else BatchLedger)(path) as ledger:
                runner = BatchRunner(
                    used,
                    ledger,
                    clock=clock,
                    wall=clock.now,
                    on_result=lambda r: delivered.update([str(r["custom_id"])]),
                    max_rounds=5,
                    commit_every=100,
                )
                try:
                    await runner.run(items)
                except Killed:
                    kills += 1
                    where[kind] += 1
                    continue
                results = ledger.results()
                claimed = ledger.claimed()
                intents = ledger.intents_written()
            break
    tags = Counter(batch.tag for batch in api.batches.values())
    unowned = sum(1 for batch_id in api.batches if batch_id not in claimed)
    cost_online = await online_cost(items)
    cost_batch = sum(float(r["cost"] or 0.0) for r in results.values())
    return {
        "backend": "fake",
        "items": len(items),
        "batches_created": api.batches_created,
        "intents": intents,
        "cost_online": round(cost_online, 6),
        "cost_batch": round(cost_batch, 6),
        "saving_pct": round(100 * (1 - cost_batch / cost_online), 2) if cost_online else None,
        "kills": kills,
        "duplicate_batches": unowned + sum(n - 1 for n in tags.values()),
        "lost": sum(1 for item in items if item.custom_id not in results),
        "duplicated": sum(n - 1 for n in delivered.values()),
        "kills_at": dict(where),
        "error_share": args.error_share,
        "expire_share": args.expire_share,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--items", type=int, default=3000)
    parser.add_argument("--kills", type=int, default=10)
    parser.add_argument("--error-share", type=float, default=0.02)
    parser.add_argument("--expire-share", type=float, default=0.01)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    figures = asyncio.run(run(args))
    if args.json:
        print(json.dumps(figures))
    else:
        for key, value in figures.items():
            print(f"{key:>18}: {value}")


if __name__ == "__main__":
    sys.exit(main())
