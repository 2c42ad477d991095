"""``run``: a whole run collected, its outcomes in input order, and its summary.

The front door of the engine: a plain run is a ``Stream`` consumed to the end; with a
``journal`` it goes through ``engine.jobs`` (which resumes), with an ``executor`` through
``engine.cluster`` (whose workers make the calls). Those two are imported only when asked
for, so a plain run never loads the journal's SQLite or Ray.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, Awaitable, Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from quorum.engine.budget import Budget
from quorum.engine.clock import SYSTEM_CLOCK, Clock
from quorum.engine.events import EventSink
from quorum.engine.outcome import RunResult
from quorum.engine.plan import make_plan
from quorum.engine.policy import FailurePolicy, Policy
from quorum.engine.retry import Retry
from quorum.engine.runner import Stream

if TYPE_CHECKING:  # Ray is imported only when a cluster is asked for
    from quorum.engine.cluster.executor import RayExecutor

T = TypeVar("T")
R = TypeVar("R")


async def run(
    fn: Callable[[T], Awaitable[R]],
    items: Iterable[T] | AsyncIterable[T],
    /,
    *,
    concurrency: int | None = None,
    policy: Policy = FailurePolicy.IGNORE,
    retry: Retry | None = None,
    timeout: float | None = None,  # noqa: ASYNC109 - each task's limit, a run setting
    deadline: float | None = None,
    budget: Budget | None = None,
    on_event: EventSink | None = None,
    ids: Callable[[int, T], str] | None = None,
    clock: Clock = SYSTEM_CLOCK,
    label: str = "",
    journal: str | Path | None = None,
    executor: RayExecutor | None = None,
) -> RunResult[R]:
    """Run ``fn`` over every item; every outcome in input order, and the summary.

    ``concurrency`` (tasks in flight), ``timeout`` (seconds per task, its retries
    included), ``deadline`` (seconds for the whole run), ``budget`` and ``on_event``
    default to the settings in force (``quorum.engine.settings``; 16 tasks, no limits).
    ``policy`` is a ``FailurePolicy`` or ``Quorum(k)``; ``retry`` a ``Retry`` for whole
    tasks (LLM calls are already retried by their ``Connection``); ``ids`` names each task
    (``(index, item) -> str``); ``label`` names the run in its events. Raises the policy's
    ``RunFailed`` subclass when the policy gives up; its ``result`` holds every outcome.
    ``journal``: a file recording each outcome as it lands; running again resumes, calling
    only the items not yet done (values must be JSON; see ``quorum.engine.jobs``).
    ``executor``: a ``quorum.RayExecutor``; ``fn`` must then be ``llm.complete`` of a
    ``quorum.connect`` connection, whose calls its workers make while this process keeps
    the journal and the cache (``quorum.engine.cluster.remote``).
    """
    if executor is not None:
        from quorum.engine.cluster.remote import run_on  # Ray only when a cluster is asked for

        options = dict(
            concurrency=concurrency, policy=policy, retry=retry, timeout=timeout, deadline=deadline,
            budget=budget, on_event=on_event, clock=clock, label=label,
            **({"ids": ids} if ids is not None else {}),
        )  # fmt: skip
        remote: RunResult[Any] = await run_on(executor, fn, items, journal=journal, options=options)  # type: ignore[arg-type]
        return remote
    if journal is not None:
        from quorum.engine.jobs import run_journaled  # the journal is built on this module

        return await run_journaled(
            fn, items, journal, concurrency=concurrency, policy=policy, retry=retry, timeout=timeout,
            deadline=deadline, budget=budget, on_event=on_event, clock=clock, label=label, ids=ids,
        )  # fmt: skip
    plan = make_plan(concurrency, policy, retry, timeout, deadline, budget, on_event, ids, clock, label)
    async with Stream(fn, items, plan, keep=True) as flow:
        async for _ in flow:
            pass
    return flow.result()
