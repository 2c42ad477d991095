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

Backends (``--backend``): ``emulator`` (the default: quorum's emulator through the official
Anthropic SDK; ``cost_batch`` is what the emulator billed at the batch price, the online
cost what the same requests cost as online calls to it) and ``fake`` (the in-memory batch
API on a virtual clock, so a batch's 30 minutes pass at once).

Usage: ``python bench/batch_api.py [--json] [--items N] [--kills K] [--error-share F]
[--expire-share F] [--seed N] [--backend emulator|fake] [--batch-time S]``.
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


async def online_cost(provider: Any, items: list[BatchItem], concurrency: int = 32) -> float:
    """What the same requests cost answered online, one call each."""
    gate = asyncio.Semaphore(concurrency)

    async def one(item: BatchItem) -> float:
        async with gate:
            return (await provider.complete(item.request)).cost or 0.0

    return sum(await asyncio.gather(*(one(item) for item in items)))


class Job:
    """One batch job run, killed and re-run until it is done."""

    def __init__(self, api: Any, items: list[BatchItem], args: argparse.Namespace, **timing: Any) -> None:
        self.api, self.items, self.args, self.timing = api, items, args, timing
        self.delivered: Counter[str] = Counter()
        self.where: Counter[str] = Counter()
        self.kills = 0

    async def run(self, path: Path) -> tuple[dict[str, Any], frozenset[str]]:
        """Every result by custom_id, and the batch ids the journal owns."""
        rng = random.Random(self.args.seed)
        while True:
            # Kill at each kind of step in turn; a run that is not killed finishes the job.
            kind = KINDS[self.kills % len(KINDS)] if self.kills < self.args.kills else ""
            used: Any = Killer(self.api, kind, rng.randrange(len(self.items))) if kind else self.api
            with (ClosingKilled if kind == "before_close" else BatchLedger)(path) as ledger:
                runner = BatchRunner(
                    used,
                    ledger,
                    on_result=lambda r: self.delivered.update([str(r["custom_id"])]),
                    max_rounds=5,
                    commit_every=100,
                    **self.timing,
                )
                try:
                    await runner.run(self.items)
                except Killed:
                    self.kills += 1
                    self.where[kind] += 1
                    continue
                return ledger.results(), ledger.claimed()

    def figures(self, results: dict[str, Any], cost_online: float, cost_batch: float) -> dict[str, Any]:
        return {
            "items": len(self.items),
            "cost_online": round(cost_online, 6),
            "cost_batch": round(cost_batch, 6),
            "saving_pct": round(100 * (1 - cost_batch / cost_online), 2) if cost_online else None,
            "kills": self.kills,
            "lost": sum(1 for item in self.items if item.custom_id not in results),
            "duplicated": sum(n - 1 for n in self.delivered.values()),
            "kills_at": dict(self.where),
            "error_share": self.args.error_share,
            "expire_share": self.args.expire_share,
        }


async def on_fake(args: argparse.Namespace, path: Path) -> dict[str, Any]:
    """The in-memory batch API on a virtual clock: a batch's 30 minutes pass at once."""
    clock = VirtualClock()
    provider = FakeProvider(model=MODEL, price=price_of(MODEL))
    shares = {"error_share": args.error_share, "expire_share": args.expire_share}
    api = FakeBatches(provider, now=clock.now, time_to_end=1800, seed=11, **shares)
    job = Job(api, requests(args.items), args, clock=clock, wall=clock.now)
    results, claimed = await job.run(path)
    tags = Counter(batch.tag for batch in api.batches.values())
    unowned = sum(1 for batch_id in api.batches if batch_id not in claimed)
    cost_batch = sum(float(r["cost"] or 0.0) for r in results.values())
    return {
        "backend": "fake",
        **job.figures(results, await online_cost(provider, job.items), cost_batch),
        "batches_created": api.batches_created,
        "duplicate_batches": unowned + sum(n - 1 for n in tags.values()),
    }


async def on_emulator(args: argparse.Namespace, path: Path) -> dict[str, Any]:
    """quorum's emulator through the official Anthropic SDK; the provider's own bill."""
    from quorum.llm.anthropic import AnthropicProvider
    from quorum.llm.batches.anthropic import AnthropicBatches
    from quorum.testing.emulator import Emulator

    shares = {"batch_errored": args.error_share, "batch_expired": args.expire_share}
    async with Emulator(batch_time=args.batch_time, seed=11, **shares) as emu:
        options = {"api_key": "k", "base_url": emu.anthropic_base_url}
        api = AnthropicBatches(MODEL, **options)
        job = Job(api, requests(args.items), args, poll_s=0.1, first_poll_s=0.02)
        results, claimed = await job.run(path)
        billed = emu.stats.batch_cost_usd
        created = emu.stats.batches_created
        online = AnthropicProvider(MODEL, **options)
        cost_online = await online_cost(online, job.items)
        await online.aclose()
        await api.aclose()
    return {
        "backend": "emulator",
        **job.figures(results, cost_online, billed),
        "batches_created": created,
        "duplicate_batches": created - len(claimed),
    }


async def run(args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "job.journal"
        return await (on_emulator(args, path) if args.backend == "emulator" else on_fake(args, path))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--items", type=int, default=3000)
    parser.add_argument("--kills", type=int, default=10)
    parser.add_argument("--error-share", type=float, default=0.02)
    parser.add_argument("--expire-share", type=float, default=0.01)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--backend", choices=("emulator", "fake"), default="emulator")
    parser.add_argument("--batch-time", type=float, default=0.3, help="emulator: seconds until a batch ends")
    args = parser.parse_args()
    figures = asyncio.run(run(args))
    if args.json:
        print(json.dumps(figures))
    else:
        for key, value in figures.items():
            print(f"{key:>18}: {value}")


if __name__ == "__main__":
    sys.exit(main())
