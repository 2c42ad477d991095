"""The Ray executor on a local cluster (one per module) against the emulator: the
account's limits hold across workers, a killed worker's items are sent again (none lost,
none twice), and the errors for a missing extra and a bad address."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest

from quorum.engine.cluster import ConnectionSpec, RayExecutor
from quorum.engine.retry import Retry
from quorum.errors import ConfigError
from quorum.testing import Emulator

pytestmark = pytest.mark.ray
ray = pytest.importorskip("ray")
MODEL = "anthropic/claude-haiku-4-5"


@pytest.fixture(scope="module")
def cluster() -> Iterator[None]:
    ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
    try:
        yield
    finally:
        ray.shutdown()


def spec_for(emu: Emulator, **limits: Any) -> ConnectionSpec:
    return ConnectionSpec(MODEL, {"base_url": emu.url, "api_key": "test"}, **limits)


async def collect(executor: RayExecutor, items: list[str], spec: ConnectionSpec) -> list[Any]:
    async with executor.stream(items, llm=spec) as outcomes:
        return [outcome async for outcome in outcomes]


async def test_three_workers_together_keep_one_accounts_limits(cluster: None) -> None:
    # One-second buckets: 10 requests and 1,500 input tokens a second, refused above that.
    with Emulator(rpm=600, itpm=90_000, burst=1.0, latency=0.02).in_thread() as emu:
        executor = RayExecutor(workers=3, concurrency=8)
        spec = spec_for(emu, rpm=600, itpm=90_000)
        started = time.monotonic()
        outcomes = await collect(executor, [f"question {i}" for i in range(60)], spec)
        wall = time.monotonic() - started
        leases = executor.limiter_stats(spec)["leases"]
        executor.shutdown()
        refused = emu.stats.count(status=429)
    assert all(o.ok for o in outcomes), [o.error_message for o in outcomes if not o.ok]
    assert len(outcomes) == 60
    assert refused == 0, f"{refused} calls were refused with 429: the workers overshot the account"
    assert wall >= 4.5  # 60 calls at 10 a second, starting empty-handed: paced, not a burst
    assert leases <= 60


async def test_one_workers_429_pauses_the_whole_account(cluster: None) -> None:
    with Emulator(errors={"429": 0.3}, retry_after=1, seed=5).in_thread() as emu:
        executor = RayExecutor(workers=2, concurrency=4)
        spec = spec_for(emu, rpm=6000, retry=Retry(attempts=10))
        outcomes = await collect(executor, [f"question {i}" for i in range(20)], spec)
        pauses = executor.limiter_stats(spec)["pauses"]
        executor.shutdown()
        refused = emu.stats.count(status=429)
    assert all(o.ok for o in outcomes), [o.error_message for o in outcomes if not o.ok]
    assert refused > 0
    assert pauses == refused  # every retry-after reached the limiter that paces both workers


async def test_a_worker_killed_mid_run_loses_nothing_and_repeats_nothing(cluster: None) -> None:
    with Emulator(latency=0.2).in_thread() as emu:
        executor = RayExecutor(workers=2, concurrency=4)
        items = [f"item {i}" for i in range(40)]
        seen: list[str] = []
        async with executor.stream(items, llm=spec_for(emu), ids=lambda i, _item: f"item-{i}") as outcomes:
            async for outcome in outcomes:
                seen.append(outcome.id)
                assert outcome.ok, outcome.error_message
                if len(seen) == 5:
                    ray.kill(outcomes.worker_handles()[0])
            stats = outcomes.stats
        executor.shutdown()
    assert sorted(seen) == sorted(f"item-{i}" for i in range(40))  # each exactly once
    assert stats.replaced_workers == 1
    assert stats.redispatched > 0


def test_a_missing_extra_is_one_clear_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # what `import ray` sees without the extra
    with pytest.raises(ConfigError, match=r"pip install 'quorum\[ray\]'") as caught:
        RayExecutor(workers=2)
    assert "\n" not in str(caught.value)


async def test_an_unreachable_address_fails_fast() -> None:
    executor = RayExecutor(address="127.0.0.1:9", workers=1)
    started = time.monotonic()
    with pytest.raises(ConfigError, match=r"no Ray cluster answers at '127\.0\.0\.1:9'") as caught:
        async with executor.stream(["x"], llm="fake"):
            pass
    assert time.monotonic() - started < 5
    assert "\n" not in str(caught.value)


def test_an_address_of_the_wrong_shape_is_refused_at_once() -> None:
    with pytest.raises(ConfigError, match="host:port"):
        RayExecutor(address="my-cluster")
