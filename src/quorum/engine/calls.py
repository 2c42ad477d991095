"""The per-call timeout, kept by one watch per connection instead of a timer per call.

``asyncio.timeout`` arms and cancels a timer on the event loop for every call: about a
third of what a call through a connection costs the CPU when the provider answers at
once (``bench/engine_overhead.py``). Calls through one connection share one timeout, so
their deadlines fall in the order the calls started: a watch keeps the calls in flight in
that order and one timer for the earliest deadline. Starting and finishing a call is then
a dict insertion and removal; the timer fires about once per timeout, and cancels the
tasks whose calls have outlived it, as ``asyncio.timeout`` would.
"""

from __future__ import annotations

import asyncio

_EXPIRED = object()  # what finish() finds for a call the sweep has already removed


class Ticket:
    """One call in flight: when it must end, and the task to cancel if it does not."""

    __slots__ = ("cancelling", "deadline", "task")

    def __init__(self, deadline: float, task: asyncio.Task[object], cancelling: int) -> None:
        self.deadline, self.task, self.cancelling = deadline, task, cancelling


class CallWatch:
    """Cancels calls that outlive ``timeout`` seconds, on the event loop it was made on."""

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self.loop = asyncio.get_running_loop()
        self._calls: dict[Ticket, None] = {}  # in start order, so in deadline order
        self._timer: asyncio.TimerHandle | None = None

    def current(self) -> bool:
        """Whether this watch belongs to the running event loop."""
        return self.loop is asyncio.get_running_loop()

    def start(self) -> Ticket:
        task: asyncio.Task[object] = asyncio.current_task()  # type: ignore[assignment]
        ticket = Ticket(self.loop.time() + self.timeout, task, task.cancelling())
        self._calls[ticket] = None
        if self._timer is None:
            self._timer = self.loop.call_at(ticket.deadline, self._sweep)
        return ticket

    def finish(self, ticket: Ticket) -> bool:
        """The call ended; ``True`` if it ended because the watch cancelled it (its task's
        cancellation is then withdrawn, as ``asyncio.timeout`` does, unless someone else
        cancelled it too)."""
        if self._calls.pop(ticket, _EXPIRED) is not _EXPIRED:
            return False
        return ticket.task.uncancel() <= ticket.cancelling

    def _sweep(self) -> None:
        self._timer = None
        now = self.loop.time()
        expired = []
        for ticket in self._calls:
            if ticket.deadline > now:
                break
            expired.append(ticket)
        for ticket in expired:
            del self._calls[ticket]
            ticket.task.cancel()
        if self._calls:
            first = next(iter(self._calls))
            self._timer = self.loop.call_at(first.deadline, self._sweep)
