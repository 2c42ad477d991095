"""quorum: run many LLM calls at once, safely and cheaply.

Layers, each importing only those below it: ``cli`` → ``apps`` → ``patterns`` → ``run``
→ ``llm``; ``testing`` holds the emulator and test doubles. This module re-exports the
public names; everything else is internal.
"""

from quorum import errors
from quorum.apps.review import (
    CodeReviewResult,
    CodeReviewSystem,
    ReviewerVote,
    Vulnerability,
    format_review_report,
)
from quorum.apps.translate import TranslationResult, TranslationWorkflow
from quorum.engine import (
    Budget,
    Concurrency,
    Connection,
    Event,
    EventKind,
    FailurePolicy,
    InputTokenRate,
    Outcome,
    OutputTokenRate,
    ParallelResult,
    ParallelWorkflow,
    ParallelWorkflowResult,
    Quorum,
    RequestRate,
    Retry,
    RunResult,
    Status,
    Stream,
    Summary,
    TaskResult,
    TokenRate,
    connect,
    execute_with_retry,
    nest,
    parallel_with_policy,
    run,
    stream,
)
from quorum.llm import (
    Capabilities,
    FakeProvider,
    Message,
    Provider,
    Reply,
    Request,
    Usage,
    register_provider,
)
from quorum.patterns import (
    Adaptive,
    Section,
    SectioningWorkflow,
    SectionResult,
    Tally,
    Vote,
    Voter,
    VotingResult,
    VotingWorkflow,
    cluster_vote,
    consensus_vote,
    majority_vote,
    merge_and_synthesize,
    normalize_decision,
    weighted_vote,
)

__version__ = "0.1.0"


def __getattr__(name: str) -> object:
    """``RayExecutor`` is imported on first use, so ``import quorum`` never loads the
    cluster code (and ``RayExecutor()`` itself imports Ray only when it is made)."""
    if name == "RayExecutor":
        from quorum.engine.cluster import RayExecutor

        return RayExecutor
    raise AttributeError(f"module 'quorum' has no attribute {name!r}")


__all__ = [
    "Adaptive",
    "Budget",
    "Capabilities",
    "CodeReviewResult",
    "CodeReviewSystem",
    "Concurrency",
    "Connection",
    "Event",
    "EventKind",
    "FailurePolicy",
    "FakeProvider",
    "InputTokenRate",
    "Message",
    "Outcome",
    "OutputTokenRate",
    "ParallelResult",
    "ParallelWorkflow",
    "ParallelWorkflowResult",
    "Provider",
    "Quorum",
    "RayExecutor",
    "Reply",
    "Request",
    "RequestRate",
    "Retry",
    "ReviewerVote",
    "RunResult",
    "Section",
    "SectionResult",
    "SectioningWorkflow",
    "Status",
    "Stream",
    "Summary",
    "Tally",
    "TaskResult",
    "TokenRate",
    "TranslationResult",
    "TranslationWorkflow",
    "Usage",
    "Vote",
    "Voter",
    "VotingResult",
    "VotingWorkflow",
    "Vulnerability",
    "__version__",
    "cluster_vote",
    "connect",
    "consensus_vote",
    "errors",
    "execute_with_retry",
    "format_review_report",
    "majority_vote",
    "merge_and_synthesize",
    "nest",
    "normalize_decision",
    "parallel_with_policy",
    "register_provider",
    "run",
    "stream",
    "weighted_vote",
]
