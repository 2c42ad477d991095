"""``run(llm.complete, requests, executor=RayExecutor(...))`` on a local cluster against the
emulator: the connection travels as its spec, the driver answers cache hits itself and
keeps the journal, and what cannot be sent is refused in one line."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

import quorum
from quorum.engine.cluster import ConnectionSpec, RayExecutor
from quorum.errors import ConfigError
from quorum.llm.types import Request
from quorum.store.cache import CacheHit, ResponseCache
from quorum.testing import Emulator, FakeProvider

ray = pytest.importorskip("ray")
MODEL = "anthropic/claude-haiku-4-5"


@pytest.fixture(scope="module")
def emu() -> Iterator[Emulator]:
    with Emulator(latency=0.02).in_thread() as emulator:
        yield emulator


@pytest.fixture(scope="module")
def cluster(emu: Emulator) -> Iterator[None]:
    ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
    try:
        yield
    finally:
        ray.shutdown()


def requests(n: int) -> list[Request]:
    return [Request.of(f"question {i}", max_tokens=20) for i in range(n)]


def calls(emu: Emulator) -> int:
    return emu.stats.count(path="/v1/messages")


def test_connect_records_how_to_build_the_connection_again() -> None:
    llm = quorum.connect(
        MODEL, rpm=600, itpm=90_000, concurrency=3, timeout=20, base_url="http://x:1", api_key="k"
    )
    assert llm.spec == ConnectionSpec(
        MODEL, {"base_url": "http://x:1", "api_key": "k"}, rpm=600, itpm=90_000, concurrency=3, timeout=20
    )
    assert quorum.connect(FakeProvider()).spec is None  # a live provider object cannot travel


def test_the_workers_call_the_endpoint_the_driver_calls(monkeypatch: pytest.MonkeyPatch) -> None:
    from quorum.engine.cluster import RemoteConnection

    monkeypatch.setenv("ANTHROPIC_BASE_URL", "http://127.0.0.1:9")  # the driver's environment only
    remote = RemoteConnection(RayExecutor(workers=1), quorum.connect(MODEL, api_key="k"))
    assert remote.spec.options["base_url"] == "http://127.0.0.1:9"
    assert isinstance(remote, quorum.Provider)  # a workflow takes it in place of the connection


async def test_a_function_that_is_not_a_connections_complete_is_refused() -> None:
    executor = RayExecutor(workers=1)

    async def mine(item: str) -> str:
        return item

    with pytest.raises(ConfigError, match=r"llm\.complete of a quorum\.connect\(\) connection"):
        await quorum.run(mine, ["a"], executor=executor)
    with pytest.raises(ConfigError, match="cannot be sent to a cluster"):
        await quorum.run(quorum.connect(FakeProvider()).complete, ["a"], executor=executor)
    with pytest.raises(ConfigError, match="concurrency is per worker"):
        await quorum.run(quorum.connect("fake").complete, ["a"], executor=executor, concurrency=4)


@pytest.mark.ray
async def test_calls_go_to_the_workers_and_cache_hits_stay_at_the_driver(
    cluster: None, emu: Emulator, tmp_path: Path
) -> None:
    cache = ResponseCache(tmp_path / "cache.sqlite3")
    llm = quorum.connect(MODEL, base_url=emu.url, api_key="test", cache=cache)
    executor = RayExecutor(workers=2, concurrency=4)
    before = calls(emu)
    first = await quorum.run(llm.complete, requests(12), executor=executor)
    assert all(o.ok and o.value and o.value.text for o in first.outcomes)
    assert first.summary.counts["ok"] == 12
    assert calls(emu) - before == 12
    assert cache.counts.stored == 12  # stored at the driver: the workers have no cache
    assert first.summary.calls == 12  # the workers' calls are counted here
    llm = quorum.connect(MODEL, base_url=emu.url, api_key="test", cache=cache)
    again = await quorum.run(llm.complete, requests(12), executor=executor)
    executor.shutdown()
    assert calls(emu) - before == 12  # nothing sent: every answer came from the driver's cache
    assert all(isinstance(o.value.raw, CacheHit) for o in again.outcomes if o.value)
    assert [o.value.text for o in again.outcomes if o.value] == [
        o.value.text for o in first.outcomes if o.value
    ]


@pytest.mark.ray
async def test_the_driver_keeps_the_journal_and_resumes_from_it(
    cluster: None, emu: Emulator, tmp_path: Path
) -> None:
    llm = quorum.connect(MODEL, base_url=emu.url, api_key="test")
    executor = RayExecutor(workers=2, concurrency=4)
    journal = tmp_path / "job.journal"
    before = calls(emu)
    first = await quorum.run(llm.complete, requests(10), executor=executor, journal=journal)
    assert first.summary.counts["ok"] == 10
    assert calls(emu) - before == 10
    more = await quorum.run(llm.complete, requests(14), executor=executor, journal=journal)
    executor.shutdown()
    assert more.summary.counts["ok"] == 14
    assert calls(emu) - before == 14  # only the 4 new ones were sent
    assert [o.value.text for o in more.outcomes[:10] if o.value] == [
        o.value.text for o in first.outcomes if o.value
    ]


@pytest.mark.ray
async def test_a_workflow_takes_a_remote_connection_and_its_calls_are_counted_once(
    cluster: None, emu: Emulator
) -> None:
    from quorum.engine.cluster import RemoteConnection

    executor = RayExecutor(workers=2, concurrency=4)
    remote = RemoteConnection(executor, quorum.connect(MODEL, base_url=emu.url, api_key="test"))
    assert quorum.connect(remote) is remote  # taken as it is: never wrapped, never charged twice
    before = calls(emu)
    voting = quorum.VotingWorkflow(llm=remote)
    voters = [quorum.Voter(f"voter {i}", "You judge.") for i in range(3)]
    async with remote:
        run = await quorum.run(lambda prompt: voting.run(voters, prompt, ["yes", "no"]), ["Is it?"])
    executor.shutdown()
    assert run.outcomes[0].ok, run.outcomes[0].error_message
    assert calls(emu) - before == 3
    assert remote.dispatched == 3
    assert run.summary.calls == 3


@pytest.mark.ray
async def test_a_budget_holds_across_the_workers_as_on_one_machine(cluster: None, emu: Emulator) -> None:
    """Each call reserves its estimated cost at the driver before it is sent, so with 2
    workers x 8 in flight the spend passes the cap by at most one call (before: by up
    to everything in flight)."""
    llm = quorum.connect(MODEL, base_url=emu.url, api_key="test")
    executor = RayExecutor(workers=2, concurrency=8)
    budget = quorum.Budget(tokens=100)  # about 12 of these calls
    before = calls(emu)
    result = await quorum.run(llm.complete, requests(60), executor=executor, budget=budget)
    executor.shutdown()
    sent = calls(emu) - before
    one_call = max(o.usage.total_tokens for o in result.outcomes if o.ok)
    assert budget.spent_tokens <= 100 + one_call, (budget.spent_tokens, sent)
    assert result.summary.counts["ok"] == sent < 60
    # as on one machine: the calls the cap left out end as BudgetExceeded, none sent
    assert {o.error_message.split(":")[0] for o in result.outcomes if not o.ok} == {"BudgetExceeded"}
