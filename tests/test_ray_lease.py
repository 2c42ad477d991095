"""The cluster limiter's arithmetic, without Ray: leases from one ledger, spent by
several workers' ``LeasedLimit``s, on a virtual clock."""

from __future__ import annotations

import asyncio

import pytest

from quorum.engine.cluster import AccountLedger, ConnectionSpec, Lease, LeasedLimit, Report
from quorum.engine.cluster.runtime import worker_start_error
from quorum.engine.cost import Cost
from quorum.engine.limits import InputTokenRate, RequestRate
from quorum.errors import ConfigError, RequestTooLarge
from quorum.llm.ratelimits import RateLimitInfo
from quorum.llm.types import Usage
from quorum.testing import VirtualClock

CALL = Cost(1, 100, 0)


class InProcess:
    """A ``Grantor`` calling the ledger directly (the limiter actor does the same)."""

    def __init__(self, ledger: AccountLedger) -> None:
        self.ledger = ledger
        self.reports: list[Report] = []

    async def lease(self, worker: str, want: Cost, report: Report | None) -> Lease:
        return await self.ledger.lease(worker, want, report)

    def report(self, report: Report) -> None:
        self.reports.append(report)
        self.ledger.take(report)


def ledger_of(clock: VirtualClock, rpm: float = 600, itpm: float = 60_000) -> AccountLedger:
    return AccountLedger([RequestRate(rpm, clock=clock), InputTokenRate(itpm, clock=clock)], clock=clock)


async def calls_per_worker(limit: LeasedLimit, calls: int, started: list[float], clock: VirtualClock) -> None:
    async def one() -> None:
        await limit.acquire(CALL)
        started.append(clock.now())
        limit.release(CALL, Usage(input_tokens=100))

    await asyncio.gather(*(one() for _ in range(calls)))


async def test_workers_together_keep_the_account_rate() -> None:
    clock = VirtualClock()
    ledger = ledger_of(clock)  # 600 rpm: 10 requests a second for the account
    grantor = InProcess(ledger)
    chunk = Cost(5, 500, 0)
    workers = [LeasedLimit(grantor, f"w{n}", chunk=chunk, clock=clock) for n in range(4)]
    started: list[float] = []
    await asyncio.gather(*(calls_per_worker(w, 100, started, clock) for w in workers))
    # 400 calls at 10 a second (2% margin, half a second of burst): about 40 s, not 10 s.
    assert 39.0 <= max(started) <= 42.0
    # What the provider sees: a bucket holding one second of refill (the strictest way a
    # provider enforces a per-minute limit) refuses none of these calls.
    assert refused_by_one_second_bucket(sorted(started), per_second=10) == 0
    # Leases are chunks, not single calls: far fewer leases than calls.
    assert ledger.stats.leases <= 400 / 4


def refused_by_one_second_bucket(starts: list[float], per_second: float) -> int:
    level, last, refused = per_second, 0.0, 0
    for at in starts:
        level = min(per_second, level + (at - last) * per_second)
        last = at
        if level >= 1 - 1e-9:
            level -= 1
        else:
            refused += 1
    return refused


async def test_a_lease_is_sized_to_the_calls_waiting() -> None:
    clock = VirtualClock()
    ledger = ledger_of(clock, rpm=6000)
    limit = LeasedLimit(InProcess(ledger), "w", chunk=Cost(8, 10_000, 0), clock=clock)
    await limit.acquire(CALL)  # one call waiting: a lease for one
    assert ledger.stats.granted == Cost(1, 100, 0)
    await asyncio.gather(*(limit.acquire(CALL) for _ in range(20)))
    assert ledger.stats.granted.requests >= 21
    assert max(ledger.stats.by_worker.values()) < 21  # some leases covered several calls


async def test_unspent_lease_and_settlement_return_to_the_account() -> None:
    clock = VirtualClock()
    ledger = ledger_of(clock)
    grantor = InProcess(ledger)
    limit = LeasedLimit(grantor, "w", chunk=Cost(5, 500, 0), clock=clock)
    await asyncio.gather(*(limit.acquire(CALL) for _ in range(2)))
    limit.release(CALL, Usage(input_tokens=40))  # used 40 of the 100 estimated
    await limit.close()
    assert ledger.open_leases == 0
    closing = grantor.reports[-1]
    assert closing.estimated.input_tokens == 100
    assert closing.used.input_tokens == 40


async def test_a_retry_after_seen_by_one_worker_pauses_every_worker() -> None:
    clock = VirtualClock()
    ledger = ledger_of(clock, rpm=6000)
    grantor = InProcess(ledger)
    first = LeasedLimit(grantor, "w1", chunk=Cost(1, 100, 0), clock=clock)
    second = LeasedLimit(grantor, "w2", chunk=Cost(1, 100, 0), clock=clock)
    await first.acquire(CALL)
    first.learn(RateLimitInfo(retry_after=5.0))
    assert ledger.stats.pauses == 1
    before = clock.now()
    await second.acquire(CALL)
    assert clock.now() - before >= 5.0


async def test_a_silent_workers_lease_is_reaped_after_it_expires() -> None:
    clock = VirtualClock()
    ledger = AccountLedger([RequestRate(600, clock=clock)], ttl_s=1.0, grace_s=1.0, clock=clock)
    await ledger.lease("dead", Cost(5, 0, 0))  # granted, then the worker dies
    clock.advance(2.5)
    await ledger.lease("alive", Cost(1, 0, 0))
    assert ledger.stats.reaped == 1
    assert ledger.stats.returned == Cost(5, 0, 0)


async def test_a_lease_larger_than_the_whole_limit_fails_at_once() -> None:
    ledger = ledger_of(VirtualClock(), itpm=1000)
    with pytest.raises(RequestTooLarge, match="more than the whole limit"):
        await ledger.lease("w", Cost(1, 5000, 0))


def test_a_spec_needs_a_model_string_and_sane_limits() -> None:
    with pytest.raises(ConfigError, match="model string"):
        ConnectionSpec(object())  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="above zero"):
        ConnectionSpec("fake", rpm=0)
    spec = ConnectionSpec("anthropic/claude-haiku-4-5", rpm=600, itpm=60_000)
    assert spec.per_second() == Cost(10, 1000, 0)
    assert spec.account_name == ConnectionSpec("anthropic/claude-other", rpm=1).account_name


def test_workers_that_cannot_import_quorum_are_told_in_one_line() -> None:
    failure = RuntimeError(
        "The actor died because of an error raised in its creation task\n"
        "  File 'x.py', line 1\nModuleNotFoundError: No module named 'quorum'"
    )
    error = worker_start_error(failure, {"pip": ["requests"]})
    assert "cannot import quorum" in str(error)
    assert "No module named 'quorum'" in str(error)
    assert "runtime_env" in str(error)
    assert "\n" not in str(error)


def test_a_worker_without_the_providers_sdk_is_told_apart_from_one_without_quorum() -> None:
    """Workers build their connection when they start, so a missing provider SDK stops
    the run there; the error names the module, not quorum."""
    failure = RuntimeError("ModuleNotFoundError: No module named 'anthropic'")
    error = str(worker_start_error(failure, None))
    assert "cannot import 'anthropic'" in error
    assert "cannot import quorum" not in error
    assert "quorum[ray]" in error  # the extra that brings quorum and its SDKs


async def test_an_unlimited_kind_of_unit_does_not_shrink_leases() -> None:
    clock = VirtualClock()
    ledger = ledger_of(clock, rpm=6000)  # no output-token limit: its chunk is 0, no cap
    limit = LeasedLimit(InProcess(ledger), "w", chunk=Cost(5, 10_000, 0), clock=clock)
    await asyncio.gather(*(limit.acquire(Cost(1, 100, 64)) for _ in range(20)))
    assert ledger.stats.leases <= 10  # several calls a lease (up to five), not one each
