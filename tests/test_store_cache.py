"""The response cache: what shapes a key, what is stored, sharing, and breaking safely."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

import quorum
from quorum.llm.fake import FakeProvider
from quorum.llm.pricing import Price
from quorum.llm.types import Message, Reply, Request, Usage
from quorum.store.cache import LOCKS_IN_A_ROW, Cached, CacheHit, ResponseCache, request_key

BASE = Request.of("Is this fine?", system="You judge.", max_tokens=50)

# One changed value per field of Request that shapes the reply. A field added to Request
# later must be added here (the test below checks that every field is covered).
CHANGED: dict[str, Any] = {
    "messages": (Message("user", "Is this bad?"),),
    "system": "You praise.",
    "prefix": "A shared document.",
    "max_tokens": 51,
    "temperature": 0.7,
    "schema": {"type": "object", "properties": {"ok": {"type": "boolean"}}},
    "schema_name": "verdict",
    "stop": ("END",),
    "seed": 7,
}
NOT_SHAPING = {"on_first_byte", "cache_prefix", "metadata"}


class Endpoint:
    """A provider as the cache sees it: name, model and the host it calls."""

    def __init__(
        self, name: str = "anthropic", model: str = "m1", base_url: str = "https://api.x.com"
    ) -> None:
        self.name, self.model, self.base_url = name, model, base_url
        self.capabilities = quorum.Capabilities()

    async def complete(self, request: Request) -> Reply:
        raise NotImplementedError


def test_every_request_field_is_either_in_the_key_or_named_as_not_shaping() -> None:
    names = {f.name for f in dataclasses.fields(Request)}
    assert names == set(CHANGED) | NOT_SHAPING


@pytest.mark.parametrize("field", sorted(CHANGED))
def test_each_field_that_shapes_a_reply_changes_the_key(field: str) -> None:
    changed = dataclasses.replace(BASE, **{field: CHANGED[field]})
    assert request_key(Endpoint(), changed) != request_key(Endpoint(), BASE)


@pytest.mark.parametrize(
    "other",
    [Endpoint(name="openai"), Endpoint(model="m2"), Endpoint(base_url="http://127.0.0.1:9999")],
    ids=["provider", "model", "endpoint"],
)
def test_provider_model_and_endpoint_change_the_key(other: Endpoint) -> None:
    assert request_key(other, BASE) != request_key(Endpoint(), BASE)


def test_the_sample_index_changes_the_key_and_other_metadata_does_not() -> None:
    first = dataclasses.replace(BASE, metadata={"sample": "0"})
    second = dataclasses.replace(BASE, metadata={"sample": "1"})
    labelled = dataclasses.replace(BASE, metadata={"trace": "abc"})
    assert request_key(Endpoint(), first) == request_key(Endpoint(), BASE)  # absent means 0
    assert request_key(Endpoint(), second) != request_key(Endpoint(), first)
    assert request_key(Endpoint(), labelled) == request_key(Endpoint(), BASE)


def test_the_api_key_is_not_in_the_key() -> None:
    from quorum.llm.anthropic import AnthropicProvider

    one = AnthropicProvider("claude-haiku-4-5", api_key="sk-ant-one", base_url="http://127.0.0.1:1")
    two = AnthropicProvider("claude-haiku-4-5", api_key="sk-ant-two", base_url="http://127.0.0.1:1")
    elsewhere = AnthropicProvider("claude-haiku-4-5", api_key="sk-ant-one", base_url="http://127.0.0.1:2")
    assert request_key(one, BASE) == request_key(two, BASE)
    assert request_key(elsewhere, BASE) != request_key(one, BASE)


async def test_a_hit_costs_nothing_keeps_its_usage_and_makes_no_call(tmp_path: Path) -> None:
    fake = FakeProvider(responder=lambda r: "fine")
    cache = ResponseCache(tmp_path / "c.sqlite3")
    llm = quorum.connect(fake, cache=cache)
    first = await llm.complete(BASE)
    again = await llm.complete(BASE)
    assert len(fake.calls) == 1
    assert again.text == first.text == "fine"
    assert again.cost == 0.0
    assert again.usage == first.usage
    assert again.usage != Usage()
    assert isinstance(again.raw, CacheHit)
    assert (cache.counts.hits, cache.counts.misses, cache.counts.stored) == (1, 1, 1)


async def test_five_samples_of_one_prompt_are_five_entries(tmp_path: Path) -> None:
    answers = iter(["a", "b", "c", "d", "e", "f", "g"])
    fake = FakeProvider(responder=lambda r: next(answers))
    llm = Cached(fake, ResponseCache(tmp_path / "c.sqlite3"))
    samples = [dataclasses.replace(BASE, metadata={"sample": str(i)}) for i in range(5)]
    first = [(await llm.complete(s)).text for s in samples]
    again = [(await llm.complete(s)).text for s in samples]
    assert first == again == ["a", "b", "c", "d", "e"]
    assert len(fake.calls) == 5


async def test_errors_and_cut_off_answers_are_not_stored(tmp_path: Path) -> None:
    cache = ResponseCache(tmp_path / "c.sqlite3")
    cut = Reply(text="half an ans", model="m", stop_reason="max_tokens")
    cache.put("k", cut)
    assert cache.get("k") is None
    failing = FakeProvider(error_rate={"server_error": 1.0})
    llm = quorum.connect(failing, cache=cache, retry=quorum.Retry(attempts=1))
    with pytest.raises(quorum.errors.ServerError):
        await llm.complete(BASE)
    assert cache.stats()["entries"] == 0


def test_two_processes_share_one_cache_file(tmp_path: Path) -> None:
    path = tmp_path / "shared.sqlite3"
    writer = textwrap.dedent(
        f"""
        import sys
        from quorum.llm.types import Reply
        from quorum.store.cache import ResponseCache
        cache = ResponseCache({str(path)!r})
        me = sys.argv[1]
        for i in range(200):
            cache.put(f"{{me}}-{{i}}", Reply(text=f"{{me}} {{i}}", model="m", cost=0.01))
            assert cache.get(f"{{me}}-{{i}}") is not None
        assert cache.working, "the cache broke"
        """
    )
    procs = [subprocess.Popen([sys.executable, "-c", writer, name]) for name in ("a", "b")]
    assert [p.wait(timeout=60) for p in procs] == [0, 0]
    cache = ResponseCache(path)
    assert cache.stats()["entries"] == 400
    assert cache.get("a-199") is not None
    assert cache.get("b-0") is not None


async def test_a_corrupt_cache_file_means_no_cache_and_one_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "c.sqlite3"
    path.write_bytes(b"this is not a database at all" * 100)
    fake = FakeProvider(responder=lambda r: "fine")
    llm = quorum.connect(fake, cache=path)
    with caplog.at_level(logging.WARNING, logger="quorum.cache"):
        for _ in range(3):
            assert (await llm.complete(BASE)).text == "fine"
    assert len(fake.calls) == 3
    warnings = [r for r in caplog.records if r.name == "quorum.cache"]
    assert len(warnings) == 1
    assert "running without a cache" in warnings[0].getMessage()


def test_a_lock_held_for_a_moment_costs_one_store_not_the_cache(tmp_path: Path) -> None:
    """Another process writing for longer than ``busy_s`` (a busy machine, a prune) skips
    this process's store; the reads go on (WAL) and so does the cache once the lock goes."""
    path = tmp_path / "c.sqlite3"
    cache = ResponseCache(path, busy_s=0.05)
    cache.put("before", Reply(text="x", model="m"))
    holder = sqlite3.connect(path, isolation_level=None, timeout=0.1)
    holder.execute("BEGIN IMMEDIATE")  # the other process's write transaction
    try:
        cache.put("during", Reply(text="y", model="m"))
        assert cache.get("before") is not None  # a hit whose bookkeeping could not be written
        assert cache.working
    finally:
        holder.execute("COMMIT")
        holder.close()
    cache.put("after", Reply(text="z", model="m"))
    assert cache.get("during") is None
    assert cache.get("after") is not None
    assert cache.working


def test_a_cache_created_by_two_processes_at_once_stays_on(tmp_path: Path) -> None:
    """The first open of a new file switches it to WAL, which needs the file to itself: a
    second process opening it then waits, and a wait past ``busy_s`` only delays the open."""
    path = tmp_path / "c.sqlite3"
    holder = sqlite3.connect(path, isolation_level=None, timeout=0.1)
    holder.execute("BEGIN EXCLUSIVE")  # the other process, creating the file in rollback mode
    cache = ResponseCache(path, busy_s=0.05)
    try:
        cache.put("early", Reply(text="x", model="m"))
        assert cache.working
    finally:
        holder.execute("COMMIT")
        holder.close()
    cache.put("later", Reply(text="y", model="m"))
    assert cache.get("later") is not None
    assert cache.working


async def test_a_locked_cache_file_means_no_cache_not_a_stalled_run(tmp_path: Path) -> None:
    path = tmp_path / "c.sqlite3"
    warm = ResponseCache(path)
    warm.put("warm", Reply(text="x", model="m"))
    warm.close()
    holder = sqlite3.connect(path, isolation_level=None, timeout=0.1)
    holder.execute("PRAGMA locking_mode=EXCLUSIVE")
    holder.execute("BEGIN EXCLUSIVE")  # another process holds the file and never lets go
    try:
        cache = ResponseCache(path, busy_s=0.05)
        fake = FakeProvider(responder=lambda r: "fine")
        llm = quorum.connect(fake, cache=cache)
        assert (await llm.complete(BASE)).text == "fine"
        assert cache.working  # one lock may be a moment's: the cache stays on
        for _ in range(LOCKS_IN_A_ROW - 1):
            assert (await llm.complete(BASE)).text == "fine"
        assert not cache.working
        assert len(fake.calls) == LOCKS_IN_A_ROW
    finally:
        holder.close()


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes to read-only directories")
async def test_a_read_only_cache_directory_means_no_cache(tmp_path: Path) -> None:
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o500)
    try:
        cache = ResponseCache(folder / "sub" / "c.sqlite3")
        fake = FakeProvider(responder=lambda r: "fine")
        llm = quorum.connect(fake, cache=cache)
        assert (await llm.complete(BASE)).text == "fine"
        assert not cache.working
    finally:
        folder.chmod(0o700)


async def test_a_cache_path_that_cannot_be_created_means_no_cache(tmp_path: Path) -> None:
    """Runs as root too (root ignores a read-only mode): a file stands where the cache's
    folder should be, so the cache cannot be opened, and the run goes on without it."""
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file, not a folder")
    cache = ResponseCache(blocker / "c.sqlite3")
    fake = FakeProvider(responder=lambda r: "fine")
    llm = quorum.connect(fake, cache=cache)
    assert (await llm.complete(BASE)).text == "fine"
    assert (await llm.complete(BASE)).text == "fine"
    assert not cache.working
    assert len(fake.calls) == 2


def test_prune_removes_what_was_not_used_for_a_while(tmp_path: Path) -> None:
    cache = ResponseCache(tmp_path / "c.sqlite3")
    cache.put("old", Reply(text="x", model="m"))
    cache.put("new", Reply(text="y", model="m"))
    assert cache._db is not None
    cache._db.execute("UPDATE replies SET used = used - 40 * 86400 WHERE key = 'old'")
    assert cache.prune(older_than_s=30 * 86400) == 1
    assert cache.get("old") is None
    assert cache.get("new") is not None
    assert cache.clear() == 1


async def test_a_hit_takes_no_rate_capacity(tmp_path: Path) -> None:
    fake = FakeProvider(responder=lambda r: "fine")
    llm = quorum.connect(fake, rpm=1, cache=tmp_path / "c.sqlite3")  # one request a minute
    await llm.complete(BASE)
    again = await asyncio.wait_for(llm.complete(BASE), timeout=2)  # would wait a minute if limited
    assert again.cost == 0.0
    assert len(fake.calls) == 1


async def test_a_hit_is_not_charged_to_the_run(tmp_path: Path) -> None:
    fake = FakeProvider(responder=lambda r: "fine", price=Price(1.0, 1.0, 0.1, 1.25))
    llm = quorum.connect(fake, cache=tmp_path / "c.sqlite3")
    first = await quorum.run(llm.complete, [BASE])
    again = await quorum.run(llm.complete, [BASE])
    assert first.summary.calls == 1
    assert first.summary.cost
    assert again.summary.calls == 0
    assert again.summary.cost is None
    assert again.outcomes[0].value is not None
    assert again.outcomes[0].value.usage == first.outcomes[0].value.usage  # kept for reference
