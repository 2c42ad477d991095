"""The chapter's parallel-workflow names, as thin faces over the engine.

``ParallelWorkflow``, ``ParallelResult``, ``ParallelWorkflowResult``, ``TaskResult``,
``execute_with_retry`` and ``parallel_with_policy`` keep the chapter's parameters and
result fields, so its code runs with only its imports changed. Underneath, the engine
does the work: lazy pulling, bounded concurrency, one retry layer, policies, accounting.
Where the chapter kept an error as a bare string, ``error`` is ``"Type: message"`` (never
empty) and ``exception`` keeps the exception itself.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from quorum.engine.budget import Budget
from quorum.engine.clock import SYSTEM_CLOCK, Clock
from quorum.engine.collect import run
from quorum.engine.connection import LazyConnection
from quorum.engine.events import EventSink
from quorum.engine.outcome import Outcome, Summary
from quorum.engine.policy import FailurePolicy, Policy
from quorum.engine.retry import CHAPTER_RETRY, Retry
from quorum.errors import RunAborted
from quorum.llm.provider import Provider
from quorum.llm.types import Message, Request


@dataclass
class ParallelResult:
    """One task of a ``ParallelWorkflow``."""

    task_id: str
    success: bool
    result: Any = None
    error: str | None = None
    execution_time: float = 0.0
    exception: BaseException | None = field(default=None, repr=False)
    status: str = "ok"


@dataclass
class ParallelWorkflowResult:
    results: list[ParallelResult] = field(default_factory=list)
    aggregated_result: Any = None
    total_time: float = 0.0
    successful_count: int = 0
    failed_count: int = 0
    summary: Summary = field(default_factory=Summary)


class ConcurrentWorkflow:
    """The chapter's workflow settings: a model (or ``llm``, a provider or connection),
    ``max_tokens`` per call, ``max_concurrent`` tasks at once and the failure ``policy``."""

    llm = LazyConnection()

    def __init__(
        self,
        model: str | None = None,
        max_tokens: int = 1024,
        max_concurrent: int = 5,
        *,
        llm: Provider | None = None,
        policy: Policy = FailurePolicy.IGNORE,
    ) -> None:
        self.model = model
        self.max_tokens = max_tokens
        self.max_concurrent = max_concurrent
        self.policy = policy
        self.llm = llm


class ParallelWorkflow(ConcurrentWorkflow, ABC):
    """Subclass and implement ``_process_task`` and ``_aggregate_results``; ``run(tasks)``
    processes every task concurrently (at most ``max_concurrent`` at once)."""

    async def _call_llm(self, messages: list[dict[str, str]], system: str | None = None) -> str:
        request = Request(
            messages=tuple(Message(m["role"], m["content"]) for m in messages),  # type: ignore[arg-type]
            system=system,
            max_tokens=self.max_tokens,
        )
        reply = await self.llm.complete(request)
        return reply.text

    @abstractmethod
    async def _process_task(self, task_id: str, task_data: Any) -> Any:
        """Process a single task."""

    @abstractmethod
    async def _aggregate_results(self, results: list[ParallelResult]) -> Any:
        """Aggregate the results of all tasks."""

    async def run(self, tasks: Sequence[Any]) -> ParallelWorkflowResult:
        async def process(pair: tuple[int, Any]) -> Any:
            return await self._process_task(f"task_{pair[0]}", pair[1])

        outcome = await run(
            process,
            enumerate(tasks),
            concurrency=self.max_concurrent,
            policy=self.policy,
            ids=lambda i, _pair: f"task_{i}",
        )
        results = [_parallel_result(o) for o in outcome.outcomes]
        aggregated = await self._aggregate_results(results)
        ok = sum(r.success for r in results)
        return ParallelWorkflowResult(
            results, aggregated, outcome.summary.wall_s, ok, len(results) - ok, outcome.summary
        )


def _parallel_result(outcome: Outcome[Any]) -> ParallelResult:
    return ParallelResult(
        task_id=outcome.id,
        success=outcome.ok,
        result=outcome.value,
        error=outcome.error_message,
        execution_time=outcome.duration,
        exception=outcome.error,
        status=str(outcome.status),
    )


@dataclass
class TaskResult:
    """Result of a parallel task execution."""

    task_id: str
    success: bool
    result: Any = None
    error: str | None = None
    attempts: int = 1
    exception: BaseException | None = field(default=None, repr=False)
    status: str = "ok"


TaskFunc = Callable[[], Awaitable[Any]]


def chapter_retry(max_retries: int, retry_delay: float) -> Retry:
    """The chapter's schedule (``CHAPTER_RETRY``) with ``max_retries`` tries in all,
    waiting ``retry_delay * 2**n`` between them."""
    return replace(CHAPTER_RETRY, attempts=max(1, max_retries), base_delay=retry_delay)


async def execute_with_retry(
    task_id: str, task_func: TaskFunc, max_retries: int = 3, retry_delay: float = 1.0
) -> TaskResult:
    """Run one task, retrying it with exponential backoff."""
    results = await parallel_with_policy(
        [(task_id, task_func)], FailurePolicy.RETRY, max_retries, retry_delay=retry_delay
    )
    return results[0]


async def parallel_with_policy(
    tasks: Sequence[tuple[str, TaskFunc]],
    policy: Policy = FailurePolicy.IGNORE,
    max_retries: int = 3,
    *,
    retry_delay: float = 1.0,
    max_concurrent: int = 16,
    timeout: float | None = None,  # noqa: ASYNC109 - each task's limit, a run setting
    deadline: float | None = None,
    budget: Budget | None = None,
    on_event: EventSink | None = None,
    clock: Clock = SYSTEM_CLOCK,
) -> list[TaskResult]:
    """Run ``(task_id, async_function)`` pairs concurrently under a failure policy.

    As in the chapter, FAIL_FAST cancels what is in flight and raises the first failure
    itself (a note on it counts what was cancelled and skipped); REQUIRE_ALL raises
    ``IncompleteRun`` (a ``RuntimeError``) listing every failure; ``Quorum(k)`` returns
    once k succeeded, and REQUIRE_ALL also raises when a budget or the deadline left
    tasks skipped. ``timeout``, ``deadline``, ``budget``, ``on_event`` and ``clock`` are
    ``quorum.run``'s.
    """
    retry = chapter_retry(max_retries, retry_delay) if policy is FailurePolicy.RETRY else None
    try:
        outcome = await run(
            lambda pair: pair[1](),
            tasks,
            concurrency=max_concurrent,
            policy=policy,
            retry=retry,
            ids=lambda _i, pair: pair[0],
            timeout=timeout,
            deadline=deadline,
            budget=budget,
            on_event=on_event,
            clock=clock,
        )
    except RunAborted as aborted:
        first = aborted.__cause__
        if not isinstance(first, Exception):
            raise
        first.add_note(f"quorum FAIL_FAST: {aborted.result.summary.line()}")
        raise first from None
    return [_task_result(o) for o in outcome.outcomes]


def _task_result(outcome: Outcome[Any]) -> TaskResult:
    return TaskResult(
        task_id=outcome.id,
        success=outcome.ok,
        result=outcome.value,
        error=outcome.error_message if not outcome.ok else None,
        attempts=max(1, outcome.attempts),
        exception=outcome.error,
        status=str(outcome.status),
    )
