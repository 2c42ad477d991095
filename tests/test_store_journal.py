"""The journal and journaled runs: resume without calling again, changed input, batches."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from quorum.engine.jobs import journaled, run_journaled
from quorum.engine.outcome import Status
from quorum.errors import ConfigError
from quorum.store.journal import Journal, JournalMismatch, JournalUnwritable


def make_task(calls: list[str], *, fail: set[str] | None = None, delay: float = 0.0):  # type: ignore[no-untyped-def]
    async def task(item: str) -> dict[str, str]:
        calls.append(item)
        await asyncio.sleep(delay)
        if fail and item in fail:
            raise RuntimeError(f"{item} failed")
        return {"answer": item.upper()}

    return task


def ids(_index: int, item: str) -> str:
    return item


async def collect(path: Path, items: list[str], calls: list[str], **options: object) -> dict[str, object]:
    seen: dict[str, object] = {}
    async with journaled(make_task(calls, **options), items, path, ids=ids, concurrency=4) as flow:  # type: ignore[arg-type]
        async for outcome in flow:
            assert outcome.id not in seen
            seen[outcome.id] = outcome.value if outcome.ok else outcome.status
    return seen


async def test_a_second_run_calls_nothing_and_yields_every_item_once(tmp_path: Path) -> None:
    items = [f"item{i}" for i in range(20)]
    calls: list[str] = []
    first = await collect(tmp_path / "j.db", items, calls)
    again: list[str] = []
    second = await collect(tmp_path / "j.db", items, again)
    assert sorted(calls) == sorted(items)
    assert again == []
    assert first == second
    assert len(second) == 20
    assert second["item3"] == {"answer": "ITEM3"}


async def test_failed_items_are_called_again_and_finished_ones_are_not(tmp_path: Path) -> None:
    items = ["a", "b", "c"]
    first = await collect(tmp_path / "j.db", items, [], fail={"b"})
    assert first["b"] is Status.ERROR
    calls: list[str] = []
    second = await collect(tmp_path / "j.db", items, calls)
    assert calls == ["b"]
    assert second["b"] == {"answer": "B"}
    journal = Journal(tmp_path / "j.db")
    entry = journal.get("b")
    journal.close()
    assert entry is not None
    assert entry.attempts == 2


async def test_changed_content_under_the_same_id_names_the_id_unless_restart(tmp_path: Path) -> None:
    path = tmp_path / "j.db"
    await collect(path, ["a", "b"], [])

    def same_id(index: int, item: str) -> str:
        return "a" if item == "a2" else item

    async def drain() -> None:
        async with journaled(make_task([]), ["a2"], path, ids=same_id) as flow:
            async for _ in flow:
                pass

    with pytest.raises(JournalMismatch, match="'a' changed"):
        await drain()
    calls: list[str] = []
    async with journaled(make_task(calls), ["a2"], path, ids=same_id, restart=True) as flow:
        async for _ in flow:
            pass
    assert calls == ["a2"]


async def test_a_stop_lets_the_running_items_finish_and_journals_them(tmp_path: Path) -> None:
    path = tmp_path / "j.db"
    items = [f"i{n}" for n in range(50)]
    calls: list[str] = []
    finished = 0
    async with journaled(make_task(calls, delay=0.01), items, path, ids=ids, concurrency=4) as flow:
        async for outcome in flow:
            finished += outcome.ok
            if finished == 6:
                flow.stop()
    assert finished == len(calls) < 50  # every item started also finished
    journal = Journal(path)
    assert journal.counts() == {"ok": finished}
    journal.close()


async def test_a_second_process_on_the_same_journal_is_refused(tmp_path: Path) -> None:
    first = Journal(tmp_path / "j.db")
    with pytest.raises(ConfigError, match="another quorum process"):
        Journal(tmp_path / "j.db")
    first.close()
    Journal(tmp_path / "j.db").close()  # the lock went with the first


def test_batch_intent_is_committed_before_its_id(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "j.db")
    journal.intend_batch("b1", "anthropic", ["x", "y"])
    journal.close()
    reopened = Journal(tmp_path / "j.db")
    (intent,) = reopened.batches()
    assert (intent.state, intent.batch_id, intent.items) == ("intent", None, ["x", "y"])
    reopened.batch_created("b1", "msgbatch_123")
    assert reopened.batches()[0].batch_id == "msgbatch_123"
    assert reopened.job_id
    reopened.close()


def test_a_file_that_is_not_a_journal_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "j.db"
    path.write_bytes(b"garbage" * 1000)
    with pytest.raises(ConfigError, match="--restart"):
        Journal(path)


async def test_run_journaled_gives_every_outcome_in_input_order(tmp_path: Path) -> None:
    calls: list[str] = []
    items = [f"x{i}" for i in range(12)]
    result = await run_journaled(make_task(calls, delay=0.001), items, tmp_path / "j.db", ids=ids)
    again = await run_journaled(make_task(calls), items, tmp_path / "j.db", ids=ids)
    assert [o.id for o in again.outcomes] == items
    assert again.values == result.values
    assert len(calls) == 12


async def test_a_journal_that_cannot_be_written_fails_the_task_instead_of_hanging(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "j.db")
    journal._writer.execute("PRAGMA query_only = ON")  # every write now fails
    seq = journal.record("a", "fp", "ok", result=1)
    with pytest.raises(JournalUnwritable, match="could not be written"):
        await asyncio.wait_for(journal.committed(seq), timeout=5)
    journal.close()
