"""Where a run's items come from: any iterable or async iterable, pulled lazily.

A generator of millions costs memory for the items in flight only. A collection (anything
with a length) is ``sized``: after a stop its remaining items are still pulled, to be
reported skipped one by one; an iterator is not pulled any further, since it may never end.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterable, AsyncIterator, Iterable, Iterator, Sized
from contextlib import suppress
from typing import Generic, TypeVar

from quorum import errors

T = TypeVar("T")


class SourceFailed(Exception):
    """The items' iterable raised ``__cause__`` while being pulled (internal: the run
    reports it as a ``RunFailed`` that carries the outcomes so far)."""


class Source(Generic[T]):
    """Lazy pulling from a sync or async iterable; one puller at a time."""

    def __init__(self, items: Iterable[T] | AsyncIterable[T]) -> None:
        self.sized = isinstance(items, Sized)
        self._sync: Iterator[T] | None = None
        self._async: AsyncIterator[T] | None = None
        if isinstance(items, AsyncIterable):
            self._async = aiter(items)
        elif isinstance(items, Iterable):
            self._sync = iter(items)
        else:
            raise errors.ConfigError(
                f"tasks must be an iterable or async iterable, got {type(items).__name__}"
            )
        self._pulling = False  # one puller inside the async iterator at a time
        self._wanting: list[asyncio.Future[None]] = []
        self._done = False

    async def next(self) -> tuple[T] | None:
        """The next item in a 1-tuple (items may themselves be ``None``), or ``None`` at
        the end. Raises ``SourceFailed`` if the iterable raised."""
        if self._done:
            return None
        try:
            if self._sync is not None:
                for item in self._sync:  # not next(): a StopIteration cannot leave a coroutine
                    return (item,)
                self._done = True
                return None
            return await self._next_async()
        except StopAsyncIteration:
            self._done = True
            return None
        except Exception as exc:
            self._done = True
            raise SourceFailed(errors.describe(exc)) from exc

    async def _next_async(self) -> tuple[T]:
        """One puller at a time, but not a fair lock: a fair lock hands over to one waiter
        per turn of the event loop, so once workers pile up behind a source that waited
        (a queue gone empty), they take one item per turn even after the items are
        back, and the run's concurrency collapses. Here a puller whose item is ready
        takes it at once, and when a pull that waited ends, every waiter tries again."""
        assert self._async is not None
        while self._pulling:
            wanting = asyncio.get_running_loop().create_future()
            self._wanting.append(wanting)
            await wanting
        if self._done:
            raise StopAsyncIteration
        self._pulling = True
        try:
            return (await anext(self._async),)
        finally:
            self._pulling = False
            wanting_now, self._wanting = self._wanting, []
            for waiter in wanting_now:
                if not waiter.done():
                    waiter.set_result(None)

    async def aclose(self) -> None:
        self._done = True
        closer = getattr(self._async, "aclose", None)
        if closer is not None:
            with suppress(Exception):
                await closer()
        sync_close = getattr(self._sync, "close", None)
        if sync_close is not None:
            sync_close()
