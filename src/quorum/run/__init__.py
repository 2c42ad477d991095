"""The engine: bounded, rate-limited, retried parallel calls, every outcome accounted for."""

from quorum.run.budget import Budget
from quorum.run.clock import Clock, SystemClock
from quorum.run.connection import Connection, connect
from quorum.run.context import nest
from quorum.run.engine import Stream, run, stream
from quorum.run.estimate import Cost, estimate
from quorum.run.events import Event, EventKind, EventSink
from quorum.run.limits import (
    Concurrency,
    InputTokenRate,
    Limit,
    Limits,
    OutputTokenRate,
    Rate,
    RequestRate,
    TokenRate,
)
from quorum.run.outcome import Outcome, RunResult, Status, Summary
from quorum.run.parallel import (
    ParallelResult,
    ParallelWorkflow,
    ParallelWorkflowResult,
    TaskResult,
    execute_with_retry,
    parallel_with_policy,
)
from quorum.run.policy import FailurePolicy, Policy, Quorum
from quorum.run.retry import Retry, is_not_permanent, is_transient

__all__ = [
    "Budget",
    "Clock",
    "Concurrency",
    "Connection",
    "Cost",
    "Event",
    "EventKind",
    "EventSink",
    "FailurePolicy",
    "InputTokenRate",
    "Limit",
    "Limits",
    "Outcome",
    "OutputTokenRate",
    "ParallelResult",
    "ParallelWorkflow",
    "ParallelWorkflowResult",
    "Policy",
    "Quorum",
    "Rate",
    "RequestRate",
    "Retry",
    "RunResult",
    "Status",
    "Stream",
    "Summary",
    "SystemClock",
    "TaskResult",
    "TokenRate",
    "connect",
    "estimate",
    "execute_with_retry",
    "is_not_permanent",
    "is_transient",
    "nest",
    "parallel_with_policy",
    "run",
    "stream",
]
