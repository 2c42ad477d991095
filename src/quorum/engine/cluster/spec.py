"""What crosses to a worker: a description of the connection, never a live one.

A ``Connection`` holds an SDK client, sockets and asyncio locks; none of that can be
pickled or shared between processes. A ``ConnectionSpec`` is the model string, the
provider options and the account's limits: each worker builds its own connection from
it, with its rate limits replaced by leases from the cluster's one limiter
(``quorum.engine.cluster.lease``), so the limits hold for the account, not per worker.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from quorum.engine.clock import SYSTEM_CLOCK, Clock
from quorum.engine.connection import Connection
from quorum.engine.cost import Cost
from quorum.engine.limits import (
    MAX_PAUSE_S,
    Concurrency,
    InputTokenRate,
    Limit,
    OutputTokenRate,
    Rate,
    RequestRate,
    TokenRate,
)
from quorum.engine.retry import Retry
from quorum.errors import ConfigError
from quorum.llm.registry import resolve

_RATES: tuple[tuple[str, type[Rate]], ...] = (
    ("rpm", RequestRate),
    ("itpm", InputTokenRate),
    ("otpm", OutputTokenRate),
    ("tpm", TokenRate),
)


@dataclass(frozen=True)
class ConnectionSpec:
    """How every worker connects: ``model`` (a model string such as
    ``"anthropic/claude-sonnet-5-5"``), provider ``options`` (``base_url``...; prefer the
    provider's environment variables for keys, set in the cluster's runtime environment),
    the account's ``rpm``/``itpm``/``otpm``/``tpm`` (shared by the whole cluster),
    ``concurrency`` (calls in flight per worker), ``timeout`` per call, ``retry`` and
    ``max_pause`` (the longest pause rate-limit headers may impose). ``quorum.connect``
    records one on the connection it makes (``Connection.spec``).

    ``account`` names the limiter: drivers that name the same account share one limiter
    (and so one set of limits) while it runs, with the limits of the spec that started it;
    by default it is derived from the model's provider and the base URL."""

    model: str
    options: Mapping[str, Any] = field(default_factory=dict)
    rpm: float | None = None
    itpm: float | None = None
    otpm: float | None = None
    tpm: float | None = None
    concurrency: int | None = None
    timeout: float | None = 300.0
    retry: Retry | None = None
    account: str | None = None
    max_pause: float = MAX_PAUSE_S

    def __post_init__(self) -> None:
        if not isinstance(self.model, str) or not self.model:
            raise ConfigError(
                f"a ConnectionSpec needs a model string such as 'anthropic/claude-sonnet-5-5', got "
                f"{self.model!r}: workers build their own connection, so a live provider cannot be sent"
            )
        self.rates(SYSTEM_CLOCK)  # a bad limit fails here, in the driver, not in every worker

    @property
    def limited(self) -> bool:
        return any(getattr(self, name) is not None for name, _kind in _RATES)

    @property
    def account_name(self) -> str:
        """The limiter's actor name: one per account (model provider and endpoint)."""
        if self.account:
            return f"quorum-limiter-{self.account}"
        base = str(self.options.get("base_url", ""))
        provider = self.model.split("/", 1)[0]
        digest = hashlib.sha256(f"{provider}|{base}".encode()).hexdigest()[:12]
        return f"quorum-limiter-{provider}-{digest}"

    def rates(self, clock: Clock = SYSTEM_CLOCK, *, burst_s: float = 0.5) -> list[Rate]:
        """The account's rate limits (the limiter actor holds these)."""
        return [
            kind(getattr(self, name), burst_s=burst_s, max_pause=self.max_pause, clock=clock)
            for name, kind in _RATES
            if getattr(self, name) is not None
        ]

    def per_second(self) -> Cost:
        """What one second of the account's binding limits allows, per kind of unit
        (0 where a kind is not limited): the scale of a lease."""
        requests = self.rpm or 0.0
        inputs = min(x for x in (self.itpm, self.tpm, float("inf")) if x is not None)
        outputs = min(x for x in (self.otpm, self.tpm, float("inf")) if x is not None)
        return Cost(
            int(requests / 60),
            int(inputs / 60) if inputs != float("inf") else 0,
            int(outputs / 60) if outputs != float("inf") else 0,
        )

    def connect(self, extra_limits: Sequence[Limit] = (), *, clock: Clock = SYSTEM_CLOCK) -> Connection:
        """The worker's connection: per-worker concurrency, then ``extra_limits`` (the
        lease on the account's rates), with this spec's retry and timeout."""
        limits: list[Limit] = [Concurrency(self.concurrency)] if self.concurrency else []
        limits.extend(extra_limits)
        provider = resolve(self.model, **dict(self.options))
        return Connection(provider, limits=limits, retry=self.retry, timeout=self.timeout, clock=clock)
