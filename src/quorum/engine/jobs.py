"""A run through a journal: killed at any moment, run again, nothing paid twice.

``journaled(fn, items, journal=PATH)`` is ``stream(fn, items)`` with a journal under it
(``quorum.store.journal``). Every item has a stable id (``ids(index, item)``; by default
its position and a hash of its content) and a fingerprint (a hash of its content). An
item the journal holds as finished is not called again: its stored result comes back as
its outcome's value (``resumed`` counts them; such an outcome made no call and cost
nothing in this run). Every other item runs, and its result is committed before its
worker takes the next item, so a kill loses at most the calls in flight. Every item's
outcome is yielded exactly once per run, resumed or not, in input order with
``ordered=True``.

``stop()`` is the graceful stop: no item is started any more, the ones running finish
and are journaled, then the iteration ends. Leaving the block early (a second Ctrl-C)
cancels what still runs; whatever had finished is in the journal either way.

Results must be JSON: ``encode`` turns a value into JSON data and ``decode`` back
(both the identity by default).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Generic, TypeVar

from quorum.engine.budget import Budget
from quorum.engine.clock import SYSTEM_CLOCK, Clock
from quorum.engine.context import current_meter
from quorum.engine.events import EventSink
from quorum.engine.outcome import Outcome, RunResult, Summary
from quorum.engine.policy import FailurePolicy, Policy
from quorum.engine.retry import Retry
from quorum.engine.runner import Stream, stream
from quorum.errors import ConfigError, describe
from quorum.store.journal import OK, Entry, Journal

T = TypeVar("T")
R = TypeVar("R")


def content_hash(item: object) -> str:
    """SHA-256 of an item's canonical JSON (of its ``repr`` when it is not JSON)."""
    try:
        text = json.dumps(item, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    except (TypeError, ValueError):
        text = repr(item)
    return hashlib.sha256(text.encode()).hexdigest()


def default_id(index: int, item: object) -> str:
    """Position and content: stable as long as the input is."""
    return f"{index}-{content_hash(item)[:12]}"


def _same(value: Any) -> Any:
    return value


@dataclass(slots=True)
class _Work(Generic[T]):
    id: str
    fingerprint: str
    item: T
    done: Entry | None


class Journaled(Generic[T, R]):
    """The iteration ``journaled`` returns: ``async with ... as outcomes: async for ...``."""

    def __init__(
        self,
        fn: Callable[[T], Awaitable[R]],
        items: Iterable[T] | AsyncIterable[T],
        journal: str | Path | Journal,
        *,
        ids: Callable[[int, T], str] | None = None,
        fingerprint: Callable[[T], str] = content_hash,
        encode: Callable[[R], Any] = _same,
        decode: Callable[[Any], R] = _same,
        restart: bool = False,
        options: dict[str, Any],
    ) -> None:
        self._fn, self._items, self._ids, self._fingerprint = fn, items, ids or default_id, fingerprint
        self._encode, self._decode = encode, decode
        self._journal_arg, self._restart, self._options = journal, restart, options
        self.journal: Journal | None = None
        self.resumed = 0
        self.in_flight = 0
        self.stopping = False
        self._flow: Stream[_Work[T], R] | None = None

    # -- lifecycle -----------------------------------------------------------------------

    async def __aenter__(self) -> Journaled[T, R]:
        arg = self._journal_arg
        self.journal = arg if isinstance(arg, Journal) else Journal(arg, restart=self._restart)
        self._flow = stream(self._task, self._works(), ids=lambda _i, w: w.id, **self._options)
        await self._flow.__aenter__()
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        try:
            if self._flow is not None:
                await self._flow.aclose()
        finally:
            if self.journal is not None and not isinstance(self._journal_arg, Journal):
                await self.journal.aclose()

    async def aclose(self) -> None:
        await self.__aexit__(None, None, None)

    def stop(self) -> None:
        """Start nothing more; let the items running finish (and be journaled)."""
        self.stopping = True

    @property
    def summary(self) -> Summary:
        return self._flow.summary if self._flow is not None else Summary()

    # -- consuming -----------------------------------------------------------------------

    def __aiter__(self) -> AsyncIterator[Outcome[R]]:
        return self

    async def __anext__(self) -> Outcome[R]:
        assert self._flow is not None, "use journaled(...) in `async with`"
        return await self._flow.__anext__()

    # -- producing -----------------------------------------------------------------------

    async def _works(self) -> AsyncIterator[_Work[T]]:
        assert self.journal is not None
        seen: set[str] = set()
        index = 0
        async for item in _each(self._items):
            if self.stopping:
                return
            item_id = self._ids(index, item)
            if item_id in seen:
                raise ConfigError(f"two items have the id {item_id!r}; a journal needs unique ids")
            seen.add(item_id)
            fingerprint = self._fingerprint(item)
            yield _Work(item_id, fingerprint, item, self.journal.check(item_id, fingerprint))
            index += 1

    async def _task(self, work: _Work[T]) -> R:
        assert self.journal is not None
        if work.done is not None:
            self.resumed += 1
            return self._decode(work.done.result)
        self.in_flight += 1
        try:
            value = await self._fn(work.item)
        except Exception as exc:
            self.journal.record(work.id, work.fingerprint, "error", error=describe(exc), **_spent())
            raise
        finally:
            self.in_flight -= 1
        seq = self.journal.record(work.id, work.fingerprint, OK, result=self._encode(value), **_spent())
        await self.journal.committed(seq)  # before this worker takes the next item
        return value


def _spent() -> dict[str, Any]:
    meter = current_meter.get()
    if meter is None:
        return {}
    u = meter.usage
    usage = {
        "input_tokens": u.input_tokens,
        "output_tokens": u.output_tokens,
        "cache_read_tokens": u.cache_read_tokens,
        "cache_write_tokens": u.cache_write_tokens,
    }
    return {"usage": usage, "cost": meter.known_cost, "attempts": 1 + meter.retries}


async def _each(items: Iterable[T] | AsyncIterable[T]) -> AsyncIterator[T]:
    if isinstance(items, AsyncIterable):
        async for item in items:
            yield item
    else:
        for item in items:
            yield item


async def run_journaled(
    fn: Callable[[T], Awaitable[R]],
    items: Iterable[T] | AsyncIterable[T],
    /,
    journal: str | Path | Journal,
    *,
    ids: Callable[[int, T], str] | None = None,
    fingerprint: Callable[[T], str] = content_hash,
    encode: Callable[[R], Any] = _same,
    decode: Callable[[Any], R] = _same,
    restart: bool = False,
    concurrency: int | None = None,
    policy: Policy = FailurePolicy.IGNORE,
    retry: Retry | None = None,
    timeout: float | None = None,  # noqa: ASYNC109 - each task's limit, a run setting
    deadline: float | None = None,
    budget: Budget | None = None,
    on_event: EventSink | None = None,
    clock: Clock = SYSTEM_CLOCK,
    label: str = "",
) -> RunResult[R]:
    """``run(fn, items, journal=PATH)``: every outcome in input order and the summary,
    through a journal; options as for ``journaled``."""
    outcomes: list[Outcome[R]] = []
    flow = journaled(
        fn, items, journal, ids=ids, fingerprint=fingerprint, encode=encode, decode=decode,
        restart=restart, concurrency=concurrency, policy=policy, retry=retry, timeout=timeout,
        deadline=deadline, budget=budget, on_event=on_event, clock=clock, label=label, ordered=True,
    )  # fmt: skip
    async with flow:
        async for outcome in flow:
            outcomes.append(outcome)
    return RunResult(outcomes, flow.summary)


def journaled(
    fn: Callable[[T], Awaitable[R]],
    items: Iterable[T] | AsyncIterable[T],
    /,
    journal: str | Path | Journal,
    *,
    ids: Callable[[int, T], str] | None = None,
    fingerprint: Callable[[T], str] = content_hash,
    encode: Callable[[R], Any] = _same,
    decode: Callable[[Any], R] = _same,
    restart: bool = False,
    concurrency: int | None = None,
    policy: Policy = FailurePolicy.IGNORE,
    retry: Retry | None = None,
    timeout: float | None = None,
    deadline: float | None = None,
    budget: Budget | None = None,
    on_event: EventSink | None = None,
    clock: Clock = SYSTEM_CLOCK,
    label: str = "",
    ordered: bool = False,
) -> Journaled[T, R]:
    """``stream(fn, items, ...)`` that resumes from ``journal`` (a path or an open
    ``Journal``); see the module's documentation. ``restart=True`` forgets the journal;
    the other options are ``stream``'s, and ``ids`` is the journal's key."""
    options: dict[str, Any] = dict(
        concurrency=concurrency, policy=policy, retry=retry, timeout=timeout, deadline=deadline,
        budget=budget, on_event=on_event, clock=clock, label=label, ordered=ordered,
    )  # fmt: skip
    return Journaled(
        fn,
        items,
        journal,
        ids=ids,
        fingerprint=fingerprint,
        encode=encode,
        decode=decode,
        restart=restart,
        options=options,
    )
