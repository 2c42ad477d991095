"""The chapter's parallel-workflow names run the chapter's own code, with only imports changed."""

from __future__ import annotations

import asyncio
import random
import re
from typing import Any

import pytest

from quorum import FailurePolicy, errors, parallel_with_policy
from quorum.engine import (
    ParallelResult,
    ParallelWorkflow,
    ParallelWorkflowResult,
    Quorum,
    Status,
    TaskResult,
    execute_with_retry,
)
from quorum.engine.clock import SystemClock
from quorum.llm import FakeProvider, load_rules
from quorum.testing.clock import VirtualClock


@pytest.fixture
def slept(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The chapter's functions take no clock: record their sleeps instead of waiting."""
    requested: list[float] = []

    async def no_wait(self: SystemClock, seconds: float) -> None:
        requested.append(seconds)
        await asyncio.sleep(0)

    monkeypatch.setattr(SystemClock, "sleep", no_wait)
    return requested


# The chapter's example, verbatim ("Error Handling in Parallel Workflows"); only the
# imports above differ.
# fmt: off
# Example usage
async def error_handling_example():
    """Demonstrate different failure policies."""
    import random

    async def unreliable_task():
        """A task that fails 50% of the time."""
        if random.random() < 0.5:
            raise RuntimeError("Random failure!")
        return "success"

    tasks = [
        (f"task_{i}", unreliable_task)
        for i in range(5)
    ]

    print("Testing IGNORE policy:")
    results = await parallel_with_policy(tasks, FailurePolicy.IGNORE)
    success = len([r for r in results if r.success])
    print(f"  Completed: {success}/5 succeeded\n")

    print("Testing RETRY policy:")
    results = await parallel_with_policy(tasks, FailurePolicy.RETRY, max_retries=5)
    for r in results:
        status = "✓" if r.success else "✗"
        print(f"  {status} {r.task_id}: {r.attempts} attempts")
# fmt: on


@pytest.mark.parametrize("seed", [0, 1, 3, 8])
async def test_the_chapter_error_handling_example_runs(
    seed: int, slept: list[float], capsys: pytest.CaptureFixture[str]
) -> None:
    random.seed(seed)
    first_round = [random.random() >= 0.5 for _ in range(5)]  # the IGNORE round's draws
    random.seed(seed)

    await error_handling_example()

    out = capsys.readouterr().out.splitlines()
    assert out[0] == "Testing IGNORE policy:"
    assert out[1] == f"  Completed: {sum(first_round)}/5 succeeded"
    assert out[3] == "Testing RETRY policy:"
    lines = [re.fullmatch(r"  ([✓✗]) (task_\d): (\d) attempts", line) for line in out[4:]]
    assert all(lines)
    assert [m.group(2) for m in lines if m] == [f"task_{i}" for i in range(5)]
    attempts = [int(m.group(3)) for m in lines if m]
    assert all(1 <= n <= 5 for n in attempts)
    # every retry waited the chapter's exponential backoff: 1, 2, 4, 8 seconds
    assert len(slept) == sum(n - 1 for n in attempts)
    assert sorted(slept) == sorted(2.0**k for n in attempts for k in range(n - 1))


async def test_policies_through_the_chapter_function() -> None:
    async def ok() -> str:
        return "fine"

    async def broken() -> str:
        raise RuntimeError("Random failure!")

    tasks = [("a", ok), ("b", broken), ("c", ok)]
    ignored = await parallel_with_policy(tasks, FailurePolicy.IGNORE)
    assert [(r.task_id, r.success, r.result) for r in ignored] == [
        ("a", True, "fine"),
        ("b", False, None),
        ("c", True, "fine"),
    ]
    assert ignored[1].error == "RuntimeError: Random failure!"
    assert isinstance(ignored[1].exception, RuntimeError)
    assert ignored[1].status == "error"

    with pytest.raises(errors.IncompleteRun, match="1 tasks failed: b: RuntimeError"):
        await parallel_with_policy(tasks, FailurePolicy.REQUIRE_ALL)

    # As in the chapter, FAIL_FAST raises the first failure itself; a note counts the rest.
    with pytest.raises(RuntimeError, match="Random failure") as caught:
        await parallel_with_policy(tasks, FailurePolicy.FAIL_FAST, max_concurrent=1)
    assert not isinstance(caught.value, errors.QuorumError)
    assert any("FAIL_FAST" in note and "skipped" in note for note in caught.value.__notes__)

    # REQUIRE_ALL's error is also the RuntimeError the chapter raised.
    with pytest.raises(RuntimeError):
        await parallel_with_policy(tasks, FailurePolicy.REQUIRE_ALL)

    two = await parallel_with_policy(tasks * 3, Quorum(2), max_concurrent=1)
    assert sum(r.success for r in two) == 2
    assert {r.status for r in two[3:]} == {"skipped"}


async def test_fail_fast_through_the_chapter_function_cancels_what_runs() -> None:
    started: list[str] = []
    cancelled: list[str] = []

    def sleeper(name: str) -> Any:
        async def task() -> str:
            started.append(name)
            try:
                await asyncio.sleep(30)
            except asyncio.CancelledError:
                cancelled.append(name)
                raise
            return name

        return task

    async def broken() -> str:
        await asyncio.sleep(0.001)
        raise ValueError("broken")

    tasks = [("s1", sleeper("s1")), ("bad", broken), ("s2", sleeper("s2")), ("s3", sleeper("s3"))]
    with pytest.raises(ValueError, match="broken"):
        await parallel_with_policy(tasks, FailurePolicy.FAIL_FAST, max_concurrent=3)
    assert started == ["s1", "s2"]
    assert sorted(cancelled) == ["s1", "s2"]  # cancelled together; their order is not defined


async def test_task_result_fields() -> None:
    result = TaskResult(task_id="t", success=True)
    assert (result.task_id, result.success, result.result, result.error, result.attempts) == (
        "t",
        True,
        None,
        None,
        1,
    )


async def test_execute_with_retry_backs_off_exponentially(slept: list[float]) -> None:
    tries = 0

    async def flaky() -> str:
        nonlocal tries
        tries += 1
        if tries < 4:
            raise ConnectionError(f"try {tries}")
        return "done"

    result = await execute_with_retry("job", flaky, max_retries=4, retry_delay=0.5)
    assert (result.task_id, result.success, result.result, result.attempts) == ("job", True, "done", 4)
    assert slept == [0.5, 1.0, 2.0]


async def test_execute_with_retry_gives_up_with_the_last_error(slept: list[float]) -> None:
    async def hopeless() -> str:
        raise ConnectionError("still down")

    result = await execute_with_retry("job", hopeless, max_retries=3)
    assert not result.success
    assert result.attempts == 3
    assert result.error == "ConnectionError: still down"
    assert slept == [1.0, 2.0]


async def test_parallel_with_policy_passes_run_options_through() -> None:
    clock = VirtualClock()
    tries = {"x": 0}

    async def flaky() -> str:
        tries["x"] += 1
        if tries["x"] < 3:
            raise OSError("flaky")
        return "ok"

    results = await parallel_with_policy([("x", flaky)], FailurePolicy.RETRY, 3, retry_delay=2.0, clock=clock)
    assert results[0].attempts == 3
    assert clock.slept == [2.0, 4.0]


class Summaries(ParallelWorkflow):
    """A chapter-style workflow: summarise each document, join the summaries."""

    async def _process_task(self, task_id: str, task_data: Any) -> Any:
        return await self._call_llm(
            [{"role": "user", "content": f"summarise: {task_data}"}], system="Be brief."
        )

    async def _aggregate_results(self, results: list[ParallelResult]) -> Any:
        return " | ".join(r.result for r in results if r.success)


async def test_parallel_workflow_subclass_runs_with_max_concurrent_respected() -> None:
    rules = load_rules(
        [
            {"match": "broken", "error": "bad_request", "latency": 0.001},
            {"match": "summarise: (.*)", "reply": "short", "latency": 0.003},
        ]
    )
    fake = FakeProvider(rules=rules)
    workflow = Summaries(max_concurrent=3, llm=fake)
    documents = [f"doc {i}" for i in range(8)] + ["broken doc"]

    result = await workflow.run(documents)

    assert isinstance(result, ParallelWorkflowResult)
    assert fake.max_in_flight == 3
    assert [r.task_id for r in result.results] == [f"task_{i}" for i in range(9)]
    assert result.successful_count == 8
    assert result.failed_count == 1
    assert result.aggregated_result == " | ".join(["short"] * 8)
    failed = result.results[8]
    assert not failed.success
    assert failed.error is not None
    assert failed.error.startswith("BadRequest: ")
    assert failed.status == "error"
    assert all(r.execution_time > 0 for r in result.results)
    assert result.total_time > 0
    assert result.summary.count(Status.OK) == 8
    assert fake.calls[0].system == "Be brief."
    assert fake.calls[0].max_tokens == 1024


async def test_parallel_workflow_needs_no_key_until_it_calls(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QUORUM_MODEL", "fake/echo")
    workflow = Summaries(model=None)
    assert workflow.max_concurrent == 5
    result = await workflow.run(["a"])
    assert result.successful_count == 1
    assert workflow.llm.model == "echo"


async def test_parallel_result_fields() -> None:
    result = ParallelResult(task_id="t", success=False, error="boom")
    assert (result.task_id, result.success, result.result, result.error, result.execution_time) == (
        "t",
        False,
        None,
        "boom",
        0.0,
    )
    whole = ParallelWorkflowResult()
    assert (whole.results, whole.aggregated_result, whole.total_time) == ([], None, 0.0)
    assert (whole.successful_count, whole.failed_count) == (0, 0)
