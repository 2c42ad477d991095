"""The engine: bounded, rate-limited, retried parallel calls, every outcome accounted for."""

from quorum.engine.budget import Budget
from quorum.engine.clock import Clock, SystemClock
from quorum.engine.collect import run
from quorum.engine.connection import Connection, connect
from quorum.engine.context import nest
from quorum.engine.cost import Cost, estimate
from quorum.engine.events import Event, EventKind, EventSink
from quorum.engine.limits import (
    Concurrency,
    InputTokenRate,
    Limit,
    Limits,
    OutputTokenRate,
    Rate,
    RequestRate,
    TokenRate,
)
from quorum.engine.outcome import Outcome, RunResult, Status, Summary
from quorum.engine.parallel import (
    ParallelResult,
    ParallelWorkflow,
    ParallelWorkflowResult,
    TaskResult,
    execute_with_retry,
    parallel_with_policy,
)
from quorum.engine.policy import FailurePolicy, Policy, Quorum
from quorum.engine.retry import Retry, is_not_permanent, is_transient
from quorum.engine.runner import Stream, stream
from quorum.engine.settings import Settings

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
    "Settings",
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
