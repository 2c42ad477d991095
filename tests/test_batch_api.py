"""The batch driver on the in-memory batch API: lifecycle, resubmission, kills, stops."""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any, ClassVar

import pytest

from batch_kills import KillAt, Killed
from quorum import errors
from quorum.engine.batch_ledger import BatchLedger
from quorum.engine.batches import BatchRunner, BatchStop, BatchView
from quorum.llm.batches.base import (
    BatchItem,
    BatchLimits,
    BatchStatus,
    Intent,
    ItemResult,
    batch_priced,
    group,
    wire_id,
)
from quorum.llm.batches.fake import FakeBatches
from quorum.llm.fake import FakeProvider
from quorum.llm.pricing import Price
from quorum.llm.types import Reply, Request
from quorum.testing import VirtualClock

PRICE = Price(1.0, 2.0, 0.1, 1.25)


def items(n: int) -> list[BatchItem]:
    return [BatchItem(f"item-{i}", Request.of(f"question {i}")) for i in range(n)]


def runner(api: Any, ledger: BatchLedger, clock: VirtualClock, **kw: Any) -> BatchRunner:
    return BatchRunner(api, ledger, clock=clock, wall=clock.now, poll_s=60, first_poll_s=5, **kw)


def fake(clock: VirtualClock, **kw: Any) -> FakeBatches:
    return FakeBatches(FakeProvider(price=PRICE), now=clock.now, **kw)


class Recorder:
    def __init__(self) -> None:
        self.records: list[dict[str, Any]] = []

    def __call__(self, record: dict[str, Any]) -> None:
        self.records.append(record)

    def ids(self) -> Counter[str]:
        return Counter(str(r["custom_id"]) for r in self.records)


async def test_a_full_lifecycle_answers_every_item_once_at_half_price(tmp_path: Path) -> None:
    clock = VirtualClock()
    api = fake(clock, time_to_end=600)
    seen, views = Recorder(), []
    with BatchLedger(tmp_path / "j.db", "job") as ledger:
        run = runner(api, ledger, clock, on_result=seen, on_progress=views.append)
        report = await run.run(items(20))
    assert report.succeeded == 20
    assert report.failed == 0
    assert report.batches_created == 1
    assert api.batches_created == 1
    assert sorted(api.submitted) == sorted(i.custom_id for i in items(20))
    assert set(seen.ids().values()) == {1}
    assert len(seen.ids()) == 20
    online = await FakeProvider(price=PRICE).complete(Request.of("question 3"))
    by_id = {r["custom_id"]: r for r in seen.records}
    assert by_id["item-3"]["text"] == online.text
    assert by_id["item-3"]["cost"] == pytest.approx(online.cost / 2)
    assert report.cost == pytest.approx(sum(r["cost"] for r in seen.records))
    assert views[-1]
    assert views[-1][0].state == "ended"
    assert views[-1][0].counts.succeeded == 20
    assert 600 <= clock.now() < 700  # polls back off to poll_s, and no further


async def test_polls_back_off_to_about_a_minute(tmp_path: Path) -> None:
    clock = VirtualClock()
    with BatchLedger(tmp_path / "j.db", "job") as ledger:
        await runner(fake(clock, time_to_end=3600), ledger, clock).run(items(2))
    assert clock.slept[:5] == [5, 10, 20, 40, 60]
    assert max(clock.slept) == 60


async def test_a_second_run_of_a_finished_job_submits_nothing(tmp_path: Path) -> None:
    clock = VirtualClock()
    api = fake(clock)
    with BatchLedger(tmp_path / "j.db", "job") as ledger:
        await runner(api, ledger, clock).run(items(5))
        again = await runner(api, ledger, clock).run(items(5))
    assert again.from_journal == 5
    assert again.batches_created == 0
    assert api.batches_created == 1


async def test_errored_and_expired_items_go_out_again_in_a_smaller_batch(tmp_path: Path) -> None:
    clock = VirtualClock()
    api = fake(clock, error_share=0.2, expire_share=0.2, seed=3)
    seen = Recorder()
    with BatchLedger(tmp_path / "j.db", "job") as ledger:
        report = await runner(api, ledger, clock, on_result=seen, max_rounds=10).run(items(50))
    sizes = [len(b.items) for b in api.batches.values()]
    assert sizes[0] == 50
    assert 0 < sizes[1] < 25
    assert sizes == sorted(sizes, reverse=True)
    assert report.succeeded == 50
    assert report.resubmitted == sum(sizes[1:])
    assert set(seen.ids().values()) == {1}
    assert len(seen.ids()) == 50


async def test_items_batches_cannot_answer_fail_with_advice_or_run_online(tmp_path: Path) -> None:
    clock = VirtualClock()
    with BatchLedger(tmp_path / "a.db", "job") as ledger:
        report = await runner(fake(clock, expire_share=1.0), ledger, clock, max_rounds=2).run(items(3))
        failed = ledger.results()
    assert report.failed == 3
    assert report.resubmitted == 3
    assert "--fallback-online" in failed["item-0"]["error"]["message"]
    online = FakeProvider(price=PRICE)
    with BatchLedger(tmp_path / "b.db", "job") as ledger:
        api = fake(clock, expire_share=1.0)
        report = await runner(api, ledger, clock, max_rounds=1, fallback=online.complete).run(items(3))
        assert {r["via"] for r in ledger.results().values()} == {"online"}
    assert report.online == 3
    assert report.succeeded == 3
    assert len(online.calls) == 3


async def test_permanent_item_errors_are_not_sent_again(tmp_path: Path) -> None:
    def answer(request: Request) -> Any:
        return errors.BadRequest("bad item", status=400) if "question 1" in request.text else "fine"

    clock = VirtualClock()
    api = FakeBatches(FakeProvider(responder=answer), now=clock.now)
    with BatchLedger(tmp_path / "j.db", "job") as ledger:
        report = await runner(api, ledger, clock).run(items(3))
        assert ledger.results()["item-1"]["error"]["type"] == "BadRequest"
    assert report.failed == 1
    assert report.succeeded == 2
    assert api.batches_created == 1


async def test_the_time_limit_cancels_the_batch_and_runs_the_rest_online(tmp_path: Path) -> None:
    clock = VirtualClock()
    api = fake(clock, time_to_end=86_400)
    online = FakeProvider(price=PRICE)
    with BatchLedger(tmp_path / "j.db", "job") as ledger:
        run = runner(api, ledger, clock, time_limit_s=3600, fallback=online.complete)
        report = await run.run(items(4))
    assert report.online == 4
    assert api.batches_created == 1
    assert next(iter(api.batches.values())).cancelled
    assert clock.now() < 3700


async def test_grouping_respects_request_and_byte_limits() -> None:
    many = items(10)
    assert [len(g) for g in group(many, BatchLimits(4, 10**6), lambda i: 10)] == [4, 4, 2]
    assert [len(g) for g in group(many, BatchLimits(100, 35), lambda i: 10)] == [3, 3, 3, 1]
    with pytest.raises(errors.RequestTooLarge, match="item-0"):
        group(many, BatchLimits(100, 5), lambda i: 10)


async def test_a_job_too_big_for_one_batch_is_split(tmp_path: Path) -> None:
    clock = VirtualClock()
    api = fake(clock, limits=BatchLimits(max_requests=7, max_bytes=10**6))
    with BatchLedger(tmp_path / "j.db", "job") as ledger:
        report = await runner(api, ledger, clock).run(items(20))
    assert report.batches_created == 3
    assert report.succeeded == 20


def test_batch_price_is_half_and_ids_are_made_safe() -> None:
    reply = Reply(text="x", model="m", cost=0.5)
    assert batch_priced(reply).cost == 0.25
    assert wire_id("ok_id-1") == "ok_id-1"
    assert wire_id("has space/and:colon").startswith("q-")
    assert len(wire_id("x" * 100)) <= 64


async def test_duplicate_custom_ids_are_refused(tmp_path: Path) -> None:
    clock = VirtualClock()
    with BatchLedger(tmp_path / "j.db", "job") as ledger, pytest.raises(errors.ConfigError, match="twice"):
        await runner(fake(clock), ledger, clock).run(items(2) + items(1))


# --- kills ------------------------------------------------------------------------------


class KilledLedger(BatchLedger):
    """Killed once every result is written but before the intent is closed."""

    def close_intent(self, tag: str, retry: Any) -> None:
        raise Killed


@pytest.mark.parametrize(
    ("step", "after"),
    [
        ("before_create", 0),
        ("after_create", 0),
        ("polling", 0),
        ("downloading", 0),
        ("downloading", 7),
        ("before_close", 0),
    ],
)
async def test_a_kill_at_any_step_resumes_the_same_batch(tmp_path: Path, step: str, after: int) -> None:
    clock = VirtualClock()
    api = fake(clock, error_share=0.1, seed=1)
    seen = Recorder()
    path = tmp_path / "j.db"
    ledger_type = KilledLedger if step == "before_close" else BatchLedger
    with ledger_type(path, "job") as ledger:
        killed = runner(KillAt(api, step, after), ledger, clock, on_result=seen, commit_every=5)
        with pytest.raises(Killed):
            await killed.run(items(20))
    with BatchLedger(path, "job") as ledger:
        report = await runner(api, ledger, clock, on_result=seen, max_rounds=10).run(items(20))
        results = ledger.results()
    first_set = next(iter(api.batches.values())).items
    assert [b.items for b in api.batches.values()].count(first_set) == 1  # one batch per item set
    assert Counter(api.submitted)["item-0"] == 1 or step == "downloading"  # errors go out again
    assert len(results) == 20
    assert all(r["status"] == "ok" for r in results.values())
    assert set(seen.ids().values()) == {1}
    assert len(seen.ids()) == 20
    assert report.batches_adopted == (1 if step == "after_create" else 0)
    committed = {"downloading": 5 if after == 7 else 0, "before_close": report.from_journal}
    assert report.from_journal == committed.get(step, 0)  # a committed part is not read twice
    assert step != "before_close" or report.from_journal > 0


async def test_a_kill_right_after_create_is_not_paid_twice(tmp_path: Path) -> None:
    clock = VirtualClock()
    api = fake(clock)
    with BatchLedger(tmp_path / "j.db", "job") as ledger:
        with pytest.raises(Killed):
            await runner(KillAt(api, "after_create"), ledger, clock).run(items(10))
        assert ledger.open_intents()[0].batch_id is None  # the orphan: created, not journaled
        report = await runner(api, ledger, clock).run(items(10))
    assert api.batches_created == 1
    assert report.batches_adopted == 1
    assert report.succeeded == 10
    assert sorted(Counter(api.submitted).values()) == [1] * 10


async def test_a_lost_create_answer_looks_for_the_batch_before_creating_again(tmp_path: Path) -> None:
    clock = VirtualClock()
    api = fake(clock)

    class LostAnswer(KillAt):
        async def create(self, intent: Intent, chunk: Sequence[BatchItem]) -> BatchStatus:
            await self.api.create(intent, chunk)
            raise errors.ConnectionFailed("the answer to create was lost")

    with BatchLedger(tmp_path / "j.db", "job") as ledger:
        report = await runner(LostAnswer(api, "none"), ledger, clock).run(items(4))
    assert api.batches_created == 1
    assert report.batches_adopted == 1
    assert report.succeeded == 4


# --- stops --------------------------------------------------------------------------------


async def test_the_first_stop_detaches_and_the_batch_is_resumed(tmp_path: Path) -> None:
    clock = VirtualClock()
    api = fake(clock, time_to_end=600)
    stop = BatchStop()

    def first_poll(views: list[BatchView]) -> None:
        if views[0].state == "in_progress" and stop.requests == 0 and clock.now() > 0:
            assert stop.request() == "detach"

    with BatchLedger(tmp_path / "j.db", "job") as ledger:
        report = await runner(api, ledger, clock, stop=stop, on_progress=first_poll).run(items(5))
        assert report.detached
        assert report.open_batches == ["fakebatch_1"]
        assert report.succeeded == 0
        assert not api.batches["fakebatch_1"].cancelled
        resumed = await runner(api, ledger, clock).run(items(5))
    assert resumed.succeeded == 5
    assert api.batches_created == 1


async def test_the_second_stop_cancels_the_remote_batch(tmp_path: Path) -> None:
    clock = VirtualClock()
    api = fake(clock, time_to_end=600)
    stop = BatchStop()

    def stop_twice(views: list[BatchView]) -> None:
        if clock.now() > 0 and stop.requests == 0:
            stop.request()
            assert stop.request() == "cancel"

    with BatchLedger(tmp_path / "j.db", "job") as ledger:
        report = await runner(api, ledger, clock, stop=stop, on_progress=stop_twice).run(items(5))
        assert report.detached
        assert api.batches["fakebatch_1"].cancelled
        resumed = await runner(api, ledger, clock).run(items(5))
    assert resumed.succeeded == 5
    assert api.batches_created == 2


async def test_the_library_switch_runs_requests_through_a_batch_and_resumes(tmp_path: Path) -> None:
    from quorum.engine.batches import run_batches

    requests = {f"r{i}": Request.of(f"say {i}") for i in range(3)}
    results = await run_batches(requests, model="fake", journal=tmp_path / "job.db")
    assert [r["status"] for r in results.values()] == ["ok"] * 3
    assert results["r1"]["text"] == (await FakeProvider().complete(requests["r1"])).text
    assert await run_batches(requests, model="fake", journal=tmp_path / "job.db") == results


def test_a_model_without_a_batch_api_is_refused_with_advice() -> None:
    from quorum.llm.batches import batches_for

    with pytest.raises(errors.ConfigError, match="anthropic/"):
        batches_for("local")


async def test_a_passing_error_while_polling_or_downloading_is_retried(tmp_path: Path) -> None:
    clock = VirtualClock()
    api = fake(clock)

    class Flaky(KillAt):
        failures: ClassVar[dict[str, int]] = {"retrieve": 1, "results": 1}

        async def retrieve(self, batch_id: str) -> BatchStatus:
            if self.failures["retrieve"]:
                self.failures["retrieve"] -= 1
                raise errors.Overloaded("busy", status=529)
            return await self.api.retrieve(batch_id)

        async def results(self, batch_id: str, chunk: Sequence[BatchItem]) -> AsyncIterator[ItemResult]:
            read = 0
            async for result in self.api.results(batch_id, chunk):
                if read == 3 and self.failures["results"]:
                    self.failures["results"] -= 1
                    raise errors.ServerError("the download broke", status=502)
                read += 1
                yield result

    seen = Recorder()
    with BatchLedger(tmp_path / "j.db", "job") as ledger:
        report = await runner(Flaky(api, "none"), ledger, clock, on_result=seen, commit_every=2).run(items(6))
    assert report.succeeded == 6
    assert set(seen.ids().values()) == {1}
    assert api.batches_created == 1
