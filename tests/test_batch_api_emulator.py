"""The batch driver and adapters on quorum's emulator, through the official SDKs:
a full lifecycle per provider, errors and expiry resubmitted, a kill at each step."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from batch_kills import KillAt, Killed
from quorum import errors
from quorum.engine.batch_ledger import BatchLedger
from quorum.engine.batches import BatchRunner
from quorum.llm.anthropic import AnthropicProvider
from quorum.llm.batches.anthropic import AnthropicBatches
from quorum.llm.batches.base import BatchItem, Intent
from quorum.llm.batches.openai import OpenAIBatches
from quorum.llm.openai import OpenAIProvider
from quorum.llm.types import Request
from quorum.testing.emulator import Emulator

RULES = [
    {"match": "greet", "reply": "Hello from the script."},
    {"match": "please fail", "error": "overloaded"},
    {"match": "bad one", "error": "bad_request"},
]
PROVIDERS = ["anthropic", "openai"]
SCHEMA = {"type": "object", "properties": {"ok": {"type": "boolean"}}, "required": ["ok"]}


def apis(kind: str, emu: Emulator) -> tuple[Any, Any]:
    """The batch adapter and the online provider for ``kind``, both on the emulator."""
    if kind == "anthropic":
        options = {"api_key": "k", "base_url": emu.anthropic_base_url}
        return AnthropicBatches("claude-haiku-4-5", **options), AnthropicProvider(
            "claude-haiku-4-5", **options
        )
    options = {"api_key": "k", "base_url": emu.openai_base_url}
    return OpenAIBatches("gpt-4o-mini", **options), OpenAIProvider("gpt-4o-mini", **options)


def runner(api: Any, ledger: BatchLedger, **kw: Any) -> BatchRunner:
    return BatchRunner(api, ledger, poll_s=0.05, first_poll_s=0.02, **kw)


def items(n: int) -> list[BatchItem]:
    return [
        BatchItem(f"row {i}", Request.of(f"question {i}", system="Be brief.", max_tokens=40))
        for i in range(n)
    ]


@pytest.mark.parametrize("kind", PROVIDERS)
async def test_a_full_lifecycle_on_the_emulator(tmp_path: Path, kind: str) -> None:
    work = [
        *items(8),
        BatchItem("greeting", Request.of("greet me")),
        BatchItem("judge", Request.of("judge", schema=SCHEMA)),
    ]
    async with Emulator(script=RULES, batch_time=0.1) as emu:
        api, online = apis(kind, emu)
        with BatchLedger(tmp_path / "j.db") as ledger:
            report = await runner(api, ledger).run(work)
            results = ledger.results()
        answered_online = await online.complete(work[3].request)
        await api.aclose()
        await online.aclose()
    assert report.succeeded == 10
    assert emu.stats.batches_created == 1
    assert results["greeting"]["text"] == "Hello from the script."
    assert results["judge"]["data"] == {"ok": False}  # the simplest answer the schema allows
    assert results["row 3"]["text"] == answered_online.text
    assert results["row 3"]["cost"] == pytest.approx(answered_online.cost / 2)  # the batch price


@pytest.mark.parametrize("kind", PROVIDERS)
async def test_errored_and_expired_items_are_resubmitted_in_smaller_batches(
    tmp_path: Path, kind: str
) -> None:
    seen: Counter[str] = Counter()
    async with Emulator(batch_time=0.02, batch_errored=0.15, batch_expired=0.15, seed=4) as emu:
        api, _ = apis(kind, emu)
        with BatchLedger(tmp_path / "j.db") as ledger:
            run = runner(api, ledger, max_rounds=10, on_result=lambda r: seen.update([str(r["custom_id"])]))
            report = await run.run(items(60))
            results = ledger.results()
        await api.aclose()
    assert all(r["status"] == "ok" for r in results.values())
    assert len(results) == 60
    assert set(seen.values()) == {1}  # each result once
    assert emu.stats.batches_created >= 2
    assert report.resubmitted > 0
    assert report.resubmitted < 60  # only what failed went out again
    assert emu.stats.batch_items == 60 + report.resubmitted


STEPS = [("before_create", 0), ("after_create", 0), ("polling", 0), ("downloading", 0), ("downloading", 9)]


@pytest.mark.parametrize("kind", PROVIDERS)
@pytest.mark.parametrize(("step", "after"), STEPS)
async def test_a_kill_at_each_step_then_a_resume_makes_one_batch_and_each_result_once(
    tmp_path: Path, kind: str, step: str, after: int
) -> None:
    seen: Counter[str] = Counter()
    path = tmp_path / "j.db"
    async with Emulator(batch_time=0.05) as emu:
        api, _ = apis(kind, emu)
        with BatchLedger(path) as ledger:
            killed = runner(
                KillAt(api, step, after),
                ledger,
                commit_every=4,
                on_result=lambda r: seen.update([str(r["custom_id"])]),
            )
            with pytest.raises(Killed):
                await killed.run(items(20))
        with BatchLedger(path) as ledger:
            report = await runner(api, ledger, on_result=lambda r: seen.update([str(r["custom_id"])])).run(
                items(20)
            )
            results = ledger.results()
        await api.aclose()
    assert emu.stats.batches_created == 1  # one batch for the item set, whatever the kill
    assert emu.stats.batch_items == 20
    assert len(results) == 20
    assert set(seen.values()) == {1}  # each result once
    assert report.batches_adopted == (1 if step == "after_create" else 0)  # the orphan, found again


@pytest.mark.parametrize("kind", PROVIDERS)
async def test_a_permanent_item_error_is_kept_and_a_passing_one_retried(tmp_path: Path, kind: str) -> None:
    work = [BatchItem("fine", Request.of("fine")), BatchItem("bad", Request.of("bad one"))]
    work.append(BatchItem("busy", Request.of("please fail")))
    async with Emulator(script=RULES, batch_time=0.02) as emu:
        api, _ = apis(kind, emu)
        with BatchLedger(tmp_path / "j.db") as ledger:
            report = await runner(api, ledger, max_rounds=2).run(work)
            results = ledger.results()
        await api.aclose()
    assert results["fine"]["status"] == "ok"
    assert results["bad"]["error"]["type"] == "BadRequest"
    assert results["busy"]["error"]["type"] == "Timeout"  # sent twice, then given up with advice
    assert "--fallback-online" in results["busy"]["error"]["message"]
    assert emu.stats.batches_created == 2
    assert report.resubmitted == 1


@pytest.mark.parametrize("kind", PROVIDERS)
async def test_an_orphan_is_found_again_and_only_its_own(kind: str) -> None:
    work = items(3)
    async with Emulator(batch_time=5) as emu:
        api, _ = apis(kind, emu)
        intent = Intent("job-x", "job-x.1", tuple(i.custom_id for i in work), written_at=time.time())
        created = await api.create(intent, work)
        found = await api.find(intent)
        taken = await api.find(intent, frozenset({created.id}))
        other = await api.find(Intent("job-x", "job-x.2", ("a",), written_at=time.time()))
        later = await api.find(Intent("job-x", "job-x.1", intent.custom_ids, written_at=time.time() + 3600))
        await api.aclose()
    assert found is not None
    assert found.id == created.id
    assert taken is None  # owned by another intent already
    assert other is None  # another size (Anthropic) or another tag (OpenAI)
    assert later is None  # created long before the intent: not its batch


@pytest.mark.parametrize("kind", PROVIDERS)
async def test_a_cancelled_batch_leaves_its_items_to_send_again(kind: str) -> None:
    work = items(2)
    async with Emulator(batch_time=30) as emu:
        api, _ = apis(kind, emu)
        status = await api.create(Intent("job", "job.1", ("row 0", "row 1"), written_at=0.0), work)
        await api.cancel(status.id)
        for _ in range(100):
            if (await api.retrieve(status.id)).ended:
                break
            await asyncio.sleep(0.02)
        results = [r async for r in api.results(status.id, work)]
        await api.aclose()
    assert {r.kind for r in results} <= {"canceled", "expired"}
    assert all(isinstance(r.error, errors.TransientError) for r in results)
