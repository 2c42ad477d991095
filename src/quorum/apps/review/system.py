"""The chapter's ``CodeReviewSystem``, made real: sectioning times voting.

The chapter sends a whole file to five specialists and counts their votes. Here the code
is first cut into units (sectioning: functions, classes, windows), every reviewer reviews
every unit (voting), and static voters scan every file. All of those calls are tasks of
ONE engine run, so the concurrency cap, rate limits, retries, the budget, the per-call
timeout and the progress events apply to the review as a whole. Then the findings are
grouped by weakness and counted (``grouping``), and everything is kept: a call that
failed is an error in its ``UnitReview`` and in its reviewer's ``ReviewerVote``, never a
silent gap.

``review(code)`` keeps the chapter's API (a code string, reviewed as a file named
``<code>``); ``review_paths(paths)`` reviews files and directories for ``quorum review``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from quorum.apps.review.grouping import group_findings, highest_risk, risk_consensus
from quorum.apps.review.inputs import (
    DEFAULT_MAX_BYTES,
    Collected,
    LineRanges,
    SourceFile,
    changed_lines,
    collect,
)
from quorum.apps.review.model import (
    CodeReviewResult,
    Finding,
    FindingGroup,
    ReviewerVote,
    Skipped,
    Unit,
    UnitReview,
    Vulnerability,
)
from quorum.apps.review.reference import with_reference
from quorum.apps.review.reviewers import (
    CHAPTER_REVIEWERS,
    Plan,
    Reviewer,
    Selection,
    ask,
    chapter_reviewers,
    load_reviewers,
    select,
    unit_token,
)
from quorum.apps.review.static import InjectionGuard, StaticVoter, static_voter
from quorum.apps.review.taxonomy import RISKS, risk_rank, severity_rank
from quorum.apps.review.units import DEFAULT_MAX_CHARS, code_budget, cut, overlaps
from quorum.engine.budget import Budget
from quorum.engine.clock import SYSTEM_CLOCK
from quorum.engine.collect import run
from quorum.engine.connection import LazyConnection
from quorum.engine.events import EventSink
from quorum.engine.outcome import Outcome
from quorum.errors import ConfigError
from quorum.llm.provider import Provider
from quorum.patterns.fanout import LeaderFirst, worth_caching

CODE_PATH = "<code>"
DEFAULT_CONTEXT = "General code review"
ReviewerSpec = str | int | Sequence[str | Reviewer | Mapping[str, Any]] | None


class CodeReviewSystem:
    """Multi-perspective security review by voting, over units of code, in one run.

    ``model`` (a model string; ``None`` picks the default) or ``llm`` (a provider or a
    connection). ``confirmation_threshold``: distinct reviewers needed to confirm a
    finding. ``reviewers``: ``None`` for ``REVIEWERS``, a number (the first N), names
    (``"injection_specialist,bandit"``), or ``Reviewer`` objects / the chapter's
    dictionaries; ``reviewers_file`` adds custom reviewers from TOML. ``concurrency``,
    ``on_event``, ``budget`` and ``timeout`` (seconds per call) go to the engine run.
    """

    REVIEWERS: list[dict[str, str]] = CHAPTER_REVIEWERS

    llm = LazyConnection()

    def __init__(
        self,
        model: str | None = None,
        confirmation_threshold: int = 2,
        *,
        llm: Provider | None = None,
        reviewers: ReviewerSpec = None,
        reviewers_file: str | Path | None = None,
        concurrency: int = 8,
        on_event: EventSink | None = None,
        budget: Budget | None = None,
        timeout: float | None = None,
    ) -> None:
        if confirmation_threshold < 1:
            raise ConfigError(f"confirmation_threshold must be at least 1, got {confirmation_threshold}")
        self.model = model
        self.confirmation_threshold = confirmation_threshold
        custom = load_reviewers(reviewers_file) if reviewers_file is not None else []
        self.selection: Selection = select(
            reviewers, defaults=chapter_reviewers(self.REVIEWERS), custom=custom
        )
        self.static: list[StaticVoter] = [InjectionGuard(), *map(static_voter, self.selection.static)]
        self.run_options: dict[str, Any] = {
            "concurrency": concurrency,
            "on_event": on_event,
            "budget": budget,
            "timeout": timeout,
        }
        self.llm = llm

    @property
    def model_name(self) -> str:
        """``provider/model`` of the LLM reviewers; "" when only static voters review."""
        return f"{self.llm.name}/{self.llm.model}" if self.selection.llm else ""

    @property
    def reviewer_names(self) -> list[str]:
        return [r.name for r in self.selection.llm] + [v.name for v in self.static]

    async def review(
        self, code: str, context: str = DEFAULT_CONTEXT, *, path: str = CODE_PATH, language: str = "python"
    ) -> CodeReviewResult:
        """The chapter's call: review a code string, as one file named ``path``."""
        return await self._review(Collected([SourceFile(path, code, language)]), context, None)

    async def review_paths(
        self,
        paths: Sequence[str | Path],
        *,
        context: str = DEFAULT_CONTEXT,
        diff: str | None = None,
        max_bytes: int = DEFAULT_MAX_BYTES,
        diff_context: int = 3,
    ) -> CodeReviewResult:
        """Review files and directories (see ``inputs.collect``). With ``diff`` (a git
        revision), only the code changed since it: files without changes are skipped as
        "unchanged", and only units overlapping a changed hunk are reviewed."""
        collected = await asyncio.to_thread(collect, paths, max_bytes=max_bytes)
        changed = None
        if diff is not None:
            changed = await asyncio.to_thread(changed_lines, diff, paths, context=diff_context)
            collected = _only_changed(collected, changed)
        return await self._review(collected, context, changed)

    # -- the run -------------------------------------------------------------------------

    async def _review(self, found: Collected, context: str, changed: LineRanges | None) -> CodeReviewResult:
        started, t0 = time.perf_counter(), SYSTEM_CLOCK.now()
        plan = Plan.for_model(self.llm.capabilities, context) if self.selection.llm else None
        limit = self._unit_chars(plan)
        units = [u for f in found.files for u in cut(f, limit, changed=_ranges(changed, f))]
        tasks = self._llm_tasks(units, plan) + self._static_tasks(found.files, changed)
        ids = _task_ids(tasks)
        done = await run(self._work, tasks, ids=lambda i, _t: ids[i], label="review", **self.run_options)
        reviews = [_unit_review(t, o, t0) for t, o in zip(tasks, done.outcomes, strict=True)]
        result = self._result(reviews, units, found, time.perf_counter() - started)
        result.summary = done.summary
        return result

    def _unit_chars(self, plan: Plan | None) -> int:
        if plan is None:
            return DEFAULT_MAX_CHARS
        return code_budget(
            self.llm.capabilities.max_context,
            answer_tokens=plan.answer_tokens,
            overhead_tokens=plan.overhead_tokens(self.selection.llm),
        )

    def _llm_tasks(self, units: list[Unit], plan: Plan | None) -> list[_Task]:
        """Unit by unit, every reviewer: the reviewers of one unit share its code block,
        and the first of them leads when that block is worth caching. Requests are built
        when a task runs, so a large review holds units, not tens of thousands of prompts."""
        if plan is None:
            return []
        reviewers = self.selection.llm
        tasks: list[_Task] = []
        for unit in units:
            token = unit_token(unit)
            first = plan.request(reviewers[0], unit, token)
            gate = LeaderFirst(plan.use_prefix and worth_caching(self.llm, first))
            tasks.extend(
                _LLMTask(r.name, unit, self, plan, r, gate, token, leader=i == 0)
                for i, r in enumerate(reviewers)
            )
        return tasks

    def _static_tasks(self, files: list[SourceFile], changed: LineRanges | None) -> list[_Task]:
        return [
            _StaticTask(voter.name, _whole_file(f), voter, f, _ranges(changed, f))
            for f in files
            for voter in self.static
            if voter.applies(f)
        ]

    async def _work(self, task: _Task) -> UnitReview:
        return await task.run()

    # -- the vote ------------------------------------------------------------------------

    def _result(
        self, reviews: list[UnitReview], units: list[Unit], found: Collected, elapsed: float
    ) -> CodeReviewResult:
        findings = [f for r in reviews for f in r.findings]
        groups = group_findings(findings, confirm=self.confirmation_threshold)
        votes = [_vote(name, [r for r in reviews if r.reviewer == name]) for name in self.reviewer_names]
        llm_names = {r.name for r in self.selection.llm}
        opinions = [
            v.overall_risk for v in votes if v.reviewer_name in llm_names and _has_opinion(v, reviews)
        ]
        consensus, confidence = risk_consensus(opinions)
        risk, confidence = _at_least_confirmed(consensus, confidence, opinions, groups)
        return CodeReviewResult(
            votes=votes,
            confirmed_vulnerabilities=[g.as_chapter_dict() for g in groups],
            risk_consensus=risk,
            confidence=confidence,
            risk_from_reviewers=consensus if risk != consensus and risk_rank(consensus) >= 0 else "",
            advisory=bool(self.selection.llm) and not self.llm.capabilities.writes_prose,
            execution_time=elapsed,
            groups=groups,
            units=units,
            reviews=reviews,
            files=[f.path for f in found.files],
            skipped=found.skipped,
            reviewers=self.reviewer_names,
            confirmation_threshold=self.confirmation_threshold,
            model=self.model_name,
            sources={f.path: f.text for f in found.files},
            warnings=found.warnings,
        )


# -- tasks ---------------------------------------------------------------------------------


@dataclass
class _Task:
    """One reviewer on one unit (an LLM call) or on one file (a static scan)."""

    reviewer: str
    unit: Unit

    async def run(self) -> UnitReview:
        raise NotImplementedError


@dataclass
class _LLMTask(_Task):
    system: CodeReviewSystem
    plan: Plan
    spec: Reviewer
    gate: LeaderFirst
    token: str
    leader: bool = False

    async def run(self) -> UnitReview:
        request = self.plan.request(self.spec, self.unit, self.token)
        answer = await ask(
            self.system.llm, request, self.reviewer, self.unit, gate=self.gate, leader=self.leader
        )
        findings = answer.findings if self.plan.prose else [with_reference(f) for f in answer.findings]
        return UnitReview(self.reviewer, self.unit, findings, answer.overall_risk)


@dataclass
class _StaticTask(_Task):
    voter: StaticVoter
    source: SourceFile
    changed: list[tuple[int, int]] | None = field(default=None)

    async def run(self) -> UnitReview:
        findings = await self.voter.scan(self.source)
        if self.changed is not None:
            findings = [f for f in findings if overlaps(f.start_line, f.end_line, self.changed)]
        return UnitReview(self.reviewer, self.unit, findings, _static_risk(findings))


def _at_least_confirmed(
    consensus: str, confidence: float, opinions: list[str], groups: list[FindingGroup]
) -> tuple[str, float]:
    """The overall risk, never lower than the most severe confirmed finding: reviewers
    who each saw one unit may call the whole "low" while two of them confirmed a critical
    flaw. When raised, the confidence is the share of reviewers who put the risk at least
    that high."""
    confirmed = [g.severity if g.severity in RISKS else "low" for g in groups if g.confirmed]
    if not confirmed:
        return consensus, confidence
    worst = max(confirmed, key=risk_rank)
    if risk_rank(worst) <= risk_rank(consensus):
        return consensus, confidence
    known = [r for r in opinions if risk_rank(r) >= 0]
    agreeing = sum(risk_rank(r) >= risk_rank(worst) for r in known)
    return worst, (agreeing / len(known) if known else 0.0)


def _static_risk(findings: list[Finding]) -> str:
    """A static voter's overall risk: its most severe finding's, "none" without any.
    (Static voters have no opinion on the whole; it is shown, not counted in consensus.)"""
    if not findings:
        return "none"
    worst = max((f.severity for f in findings), key=severity_rank)
    return worst if worst in RISKS else "low"


def _task_ids(tasks: list[_Task]) -> list[str]:
    """``reviewer@unit`` ids, with the file and then the lines added where names clash
    (two files with a ``main``, two windows of one function)."""

    def label(unit: Unit, detail: int) -> str:
        return (unit.name, f"{unit.path}:{unit.name}", f"{unit.path}:{unit.name}@{unit.start_line}")[detail]

    units = list({id(t.unit): t.unit for t in tasks}.values())
    detail = 0
    while detail < 2 and len({label(u, detail) for u in units}) < len(units):
        detail += 1
    return [f"{t.reviewer}@{label(t.unit, detail)}" for t in tasks]


def _unit_review(task: _Task, outcome: Outcome[UnitReview], t0: float) -> UnitReview:
    """The task's review with the engine's accounting; a failure as a review with its
    status and error, so it is shown wherever the review would have been."""
    if outcome.ok and outcome.value is not None:
        review = outcome.value
    else:
        review = UnitReview(task.reviewer, task.unit, status=str(outcome.status), error=outcome.error_message)
    review.usage, review.cost = outcome.usage, outcome.cost
    review.started_s = None if outcome.started_at is None else outcome.started_at - t0
    review.finished_s = None if outcome.finished_at is None else outcome.finished_at - t0
    return review


def _vote(name: str, reviews: list[UnitReview]) -> ReviewerVote:
    """The chapter's per-reviewer vote over all its units: every finding, the highest
    overall risk it gave, and ``success=False`` with the errors if any call failed."""
    found = [
        Vulnerability(f.category.value, f.severity, _location(f), f.description, f.recommendation)
        for r in reviews
        for f in r.findings
    ]
    failed = [r for r in reviews if r.status != "ok"]
    risk = highest_risk(r.overall_risk for r in reviews if r.status == "ok")
    if not failed:
        return ReviewerVote(name, found, risk)
    listed = "; ".join(f"{r.unit.name}: {r.error}" for r in failed[:3])
    more = f"; and {len(failed) - 3} more" if len(failed) > 3 else ""
    error = f"{len(failed)} of {len(reviews)} calls failed: {listed}{more}"
    return ReviewerVote(name, found, risk, success=False, error=error)


def _has_opinion(vote: ReviewerVote, reviews: list[UnitReview]) -> bool:
    """A reviewer counts in the risk consensus once one of its calls succeeded: a partial
    review is still an opinion (a lower bound on the risk it sees)."""
    return any(r.reviewer == vote.reviewer_name and r.status == "ok" for r in reviews)


def _location(finding: Finding) -> str:
    lines = f"{finding.start_line}"
    if finding.end_line != finding.start_line:
        lines += f"-{finding.end_line}"
    return f"{finding.path}:{lines}"


# -- inputs --------------------------------------------------------------------------------


def _whole_file(source: SourceFile) -> Unit:
    lines = source.text.count("\n") + (0 if source.text.endswith("\n") else 1)
    return Unit(source.path, source.path, "file", 1, max(1, lines), source.text, source.language)


def _ranges(changed: LineRanges | None, source: SourceFile) -> list[tuple[int, int]] | None:
    return None if changed is None else changed.get(source.key, [])


def _only_changed(found: Collected, changed: LineRanges) -> Collected:
    kept = [f for f in found.files if f.key in changed]
    unchanged = [Skipped(f.path, "unchanged") for f in found.files if f.key not in changed]
    return Collected(kept, found.skipped + unchanged, found.warnings)
