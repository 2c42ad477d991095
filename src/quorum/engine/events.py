"""What happens during a run, as it happens: the feed for progress bars and timelines."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any


class EventKind(StrEnum):
    QUEUED = "queued"  # pulled from the input
    STARTED = "started"  # began running
    RETRY = "retry"  # failed and will be tried again after ``delay`` seconds
    FINISHED = "finished"  # ended, with ``status``


@dataclass(frozen=True, slots=True)
class Event:
    kind: EventKind
    task_id: str
    index: int
    at: float
    run: str = ""  # the run's label, so nested runs can be told apart
    attempt: int | None = None
    delay: float | None = None
    status: str | None = None
    error: str | None = None
    outcome: Any = None


EventSink = Callable[[Event], None]
