"""The public surface is small and explicit: this list changes only on purpose."""

from __future__ import annotations

import subprocess
import sys

import quorum
import quorum.testing

PUBLIC = [
    "Adaptive", "Budget", "Capabilities", "CodeReviewResult", "CodeReviewSystem", "Concurrency",
    "Connection", "Event", "EventKind", "FailurePolicy", "FakeProvider", "InputTokenRate", "Message",
    "Outcome", "OutputTokenRate", "ParallelResult", "ParallelWorkflow", "ParallelWorkflowResult",
    "Provider", "Quorum", "RayExecutor", "Reply", "Request", "RequestRate", "Retry", "ReviewerVote",
    "RunResult",
    "Section", "SectionResult", "SectioningWorkflow", "Status", "Stream", "Summary", "Tally",
    "TaskResult", "TokenRate", "TranslationResult", "TranslationWorkflow", "Usage", "Vote", "Voter",
    "VotingResult", "VotingWorkflow", "Vulnerability", "__version__", "cluster_vote", "connect",
    "consensus_vote", "errors", "execute_with_retry", "format_review_report", "majority_vote",
    "merge_and_synthesize", "nest", "normalize_decision", "parallel_with_policy", "register_provider",
    "run", "stream", "weighted_vote",
]  # fmt: skip


def test_all_is_pinned() -> None:
    assert quorum.__all__ == PUBLIC


def test_every_public_name_exists_and_nothing_else_leaks_by_star_import() -> None:
    namespace: dict[str, object] = {}
    exec("from quorum import *", namespace)
    assert sorted(k for k in namespace if k != "__builtins__") == sorted(PUBLIC)


def test_the_chapter_names_are_all_public() -> None:
    chapter = {
        "ParallelWorkflow", "ParallelResult", "ParallelWorkflowResult", "Section", "SectionResult",
        "SectioningWorkflow", "Voter", "Vote", "VotingResult", "VotingWorkflow", "majority_vote",
        "consensus_vote", "merge_and_synthesize", "FailurePolicy", "TaskResult", "execute_with_retry",
        "parallel_with_policy", "Vulnerability", "ReviewerVote", "CodeReviewResult", "CodeReviewSystem",
        "format_review_report", "TranslationWorkflow",
    }  # fmt: skip
    assert chapter <= set(quorum.__all__)


def test_testing_surface() -> None:
    assert quorum.testing.__all__ == [
        "Emulator", "EmulatorStats", "FakeProvider", "VirtualClock", "load_rules", "parse_latency",
    ]  # fmt: skip


def test_importing_quorum_does_not_load_the_embedded_model_or_the_sdks() -> None:
    heavy = "('llama_cpp', 'anthropic', 'openai', 'ray', 'quorum.engine.cluster')"
    code = f"import sys, quorum; print(sorted(m for m in {heavy} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_no_public_name_shadows_a_submodule() -> None:
    """``import quorum.engine as e`` must give the module a reader expects, and ``quorum.run``
    must stay the function: no package exports a name that is also one of its submodules."""
    import importlib
    import pkgutil

    clashes = []
    for info in pkgutil.walk_packages(quorum.__path__, "quorum."):
        if not info.ispkg:
            continue
        package = importlib.import_module(info.name)
        children = {m.name for m in pkgutil.iter_modules(package.__path__)}
        clashes += [f"{info.name}.{name}" for name in getattr(package, "__all__", ()) if name in children]
    top = {m.name for m in pkgutil.iter_modules(quorum.__path__)}
    clashes += [f"quorum.{name}" for name in quorum.__all__ if name in top and name != "errors"]
    assert clashes == []


def test_the_ray_executor_is_public_but_loaded_only_when_named() -> None:
    code = (
        "import sys, quorum; before = 'quorum.engine.cluster' in sys.modules; "
        "from quorum.engine.cluster import RayExecutor; "
        "print(before, quorum.RayExecutor is RayExecutor, 'ray' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "True", "False"]
