"""Measuring the reviewer on labelled vulnerability fixes (``quorum eval review``).

The data is one JSON object per line, each a function from a security fix: ``pair`` ties
the vulnerable ``before`` side to the fixed ``after`` side; ``vulnerable_lines`` holds the
labelled lines (1-based in ``code``) with their CWE. Scoring rule:

* a finding matches a label when its CWE is in the label's family (families, and
  super-families such as ``crypto``, from ``cwe-families.json`` beside the data when
  present, else quorum's own taxonomy) and its line range comes within 3 lines of the
  labelled line; each label is claimed by at most one finding;
* a ``before`` function is *found* when any of its labels is matched; an ``after``
  function is a *false alarm* when any finding of the pair's family is reported on it;
* the reviewer is *right on a pair* when it finds the ``before`` side and raises no
  false alarm on the ``after`` side;
* line precision: of the findings in a label's family on ``before`` functions, the share
  that matched a label.

Every function is reviewed once; the metrics are then computed for each confirmation
threshold (a finding counts when at least that many reviewers reported its group). A
function whose review failed (no reviewer's call succeeded) is not scored as "found
nothing": it is left out of every metric, counted in ``failed_reviews`` with its reason,
and a pair is scored only when both its sides were reviewed.

With a ``journal`` each function's review is recorded as it lands (what scoring reads;
see ``eval_journal``), and running again reviews only the functions not yet done: a
function whose review failed is reviewed again, one that was scored is not.

Through a provider batch API (half the price): ``plan_reviews`` gives every reviewer's
request about every unit by custom_id ``{function}:{reviewer}@{unit}`` without sending
any, the batch driver answers them, and ``evaluate(..., answers=results)`` reviews each
function from those answers with the same parsing, grouping and scoring as online
(``quorum.engine.batch_calls``).

The data is checked when it is read: a line that is not a case is a ``ConfigError``
naming the file, the line and the field.
"""

from __future__ import annotations

import copy
import json
import random
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import astuple, dataclass, field
from pathlib import Path
from typing import Any

from quorum.apps.review.eval_journal import case_fingerprint, review_from_json, review_to_json
from quorum.apps.review.model import CodeReviewResult, FindingGroup
from quorum.apps.review.system import CodeReviewSystem
from quorum.apps.review.taxonomy import FAMILIES, parse_cwe
from quorum.apps.totals import SCHEMA_VERSION, totals
from quorum.engine.batch_calls import BatchAnswers, CallPlanner, Key, Record
from quorum.engine.collect import run
from quorum.engine.connection import Connection
from quorum.engine.jobs import journaled
from quorum.engine.outcome import Outcome, RunResult, Summary
from quorum.errors import ConfigError
from quorum.llm.secrets import redact
from quorum.llm.types import Request
from quorum.store.journal import Journal

LINE_SLACK = 3
CONTEXT = "A function from an open-source Python project"


@dataclass(frozen=True)
class Case:
    id: str
    pair: str
    side: str  # "before" or "after"
    code: str
    labels: tuple[tuple[int, int], ...]  # (cwe, line)


@dataclass
class Families:
    """CWE → family, and family → super-family."""

    family_of: dict[int, str]
    super_of: dict[str, str] = field(default_factory=dict)

    def same(self, a: int | None, b: int | None) -> bool:
        if a is None or b is None:
            return False
        fa, fb = self.family_of.get(a, f"cwe-{a}"), self.family_of.get(b, f"cwe-{b}")
        return fa == fb or self.super_of.get(fa, fa) == self.super_of.get(fb, fb)


@dataclass
class Scores:
    threshold: int
    before: int = 0
    found: int = 0
    after: int = 0
    false_alarms: int = 0
    pairs: int = 0
    pairs_right: int = 0
    family_findings: int = 0
    matched_findings: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "confirm": self.threshold,
            "found_rate": _rate(self.found, self.before),
            "false_alarm_rate": _rate(self.false_alarms, self.after),
            "pair_accuracy": _rate(self.pairs_right, self.pairs),
            "line_precision": _rate(self.matched_findings, self.family_findings),
            "before_functions": self.before,
            "after_functions": self.after,
            "pairs": self.pairs,
        }


@dataclass
class Evaluation:
    """The scores, and which functions could not be reviewed (id → why): those are in
    no score. ``incomplete`` counts reviews in which some reviewer's call failed."""

    cases: int
    scores: list[Scores]
    wall_s: float
    summary: Summary
    failures: dict[str, str]
    model: str
    incomplete: int = 0
    from_journal: int = 0  # reviews taken from the journal: no call in this run

    @property
    def failed_reviews(self) -> int:
        return len(self.failures)

    @property
    def reviewed(self) -> int:
        return self.cases - self.failed_reviews

    def as_dict(self) -> dict[str, Any]:
        return {
            "schema_version": SCHEMA_VERSION,
            "model": self.model or "static voters only",
            "functions": self.cases,
            "reviewed": self.reviewed,
            "failed_reviews": self.failed_reviews,
            "incomplete_reviews": self.incomplete,
            "from_journal": self.from_journal,
            "failures": [{"id": case, "error": redact(why)} for case, why in self.failures.items()],
            "thresholds": [s.as_dict() for s in self.scores],
            "summary": {**totals(self.summary), "wall_s": round(self.wall_s, 3)},
        }


def load_cases(
    path: Path, *, limit: int | None = None, sample: int | None = None, seed: int = 0
) -> list[Case]:
    """Cases from a JSONL file; ``limit``/``sample`` choose whole pairs (first n or n at random).
    A file without a single case is a ``ConfigError``: scoring nothing is no measurement."""
    cases = [_case(line, n, path) for n, line in enumerate(_lines(path), start=1) if line.strip()]
    if not cases:
        raise ConfigError(f"{path}: no evaluation cases (the file is empty); give one JSON object per line")
    pairs = list(dict.fromkeys(c.pair for c in cases))
    if sample is not None:
        pairs = random.Random(seed).sample(pairs, min(sample, len(pairs)))
    elif limit is not None:
        pairs = pairs[:limit]
    chosen = set(pairs)
    return [c for c in cases if c.pair in chosen]


def load_families(data_path: Path) -> Families:
    """``cwe-families.json`` beside the data when present; quorum's taxonomy otherwise."""
    beside = data_path.parent / "cwe-families.json"
    if beside.exists():
        raw = json.loads(beside.read_text(encoding="utf-8"))
        family_of = {int(c): name for name, ids in raw["families"].items() for c in ids}
        return Families(family_of, dict(raw.get("super_families", {})))
    return Families({c: name for name, ids in FAMILIES.items() for c in ids})


async def evaluate(
    cases: Sequence[Case],
    system: CodeReviewSystem,
    families: Families,
    *,
    thresholds: Sequence[int] = (1, 2, 3),
    concurrency: int = 4,
    journal: str | Path | None = None,
    restart: bool = False,
    answers: Mapping[str, Record] | None = None,
) -> Evaluation:
    """Review every case (concurrently, through the engine) and score each threshold.
    ``journal``: a file recording each review, so running again reviews only the rest
    (``restart=True`` forgets it); see the module's documentation. ``answers``: batch
    results by custom_id (see ``plan_reviews``): the reviews are read from them, no call
    is made."""
    started = time.perf_counter()
    outcome, from_journal = await _review_all(cases, system, concurrency, journal, restart, answers)
    reviews: dict[str, CodeReviewResult | None] = {}
    failures: dict[str, str] = {}
    incomplete = 0
    for case, done in zip(cases, outcome.outcomes, strict=True):
        if not done.ok or done.value is None:
            failures[case.id] = _why(done)
            continue
        reviews[case.id] = done.value
        incomplete += any(r.status != "ok" for r in done.value.reviews)
    scores = [score(cases, reviews, families, k) for k in thresholds]
    return Evaluation(
        len(cases),
        scores,
        time.perf_counter() - started,
        outcome.summary,
        failures,
        system.model_name,
        incomplete,
        from_journal,
    )


class NotReviewed(Exception):
    """A review that ran and produced no verdict to score (``review_failure`` says why).
    Raised so the run, and a journal, count the function as failed, not done."""


async def _review_all(
    cases: Sequence[Case],
    system: CodeReviewSystem,
    concurrency: int,
    journal: str | Path | None,
    restart: bool,
    answers: Mapping[str, Record] | None = None,
) -> tuple[RunResult[CodeReviewResult], int]:
    """Every case's outcome in input order, and how many came from the journal."""
    static = {voter.name for voter in system.static}

    def reviewer(case: Case) -> CodeReviewSystem:
        if answers is None:
            return system
        return _answering(system, BatchAnswers(system.llm, _review_key(case), answers).connection())

    async def review(case: Case) -> CodeReviewResult:
        result = await reviewer(case).review(case.code, context=CONTEXT)
        why = review_failure(result, static=static)
        if why is not None:
            raise NotReviewed(why)
        return result

    ids = lambda _i, case: case.id  # noqa: E731 - the journal's key is the case's own id
    if journal is None:
        return await run(review, cases, concurrency=concurrency, ids=ids, label="eval"), 0
    outcomes: list[Outcome[CodeReviewResult]] = []
    async with journaled(
        review,
        cases,
        journal,
        ids=ids,
        fingerprint=_fingerprint(system),
        encode=review_to_json,
        decode=review_from_json,
        restart=restart,
        concurrency=concurrency,
        label="eval",
        ordered=True,
    ) as flow:
        async for done in flow:
            outcomes.append(done)
    return RunResult(outcomes, flow.summary), flow.resumed


def _fingerprint(system: CodeReviewSystem) -> Callable[[Case], str]:
    """A case's fingerprint in the journal: its data line and the review's setup."""
    setup = [system.model_name, system.reviewer_names, system.confirmation_threshold]
    return lambda case: case_fingerprint(astuple(case), setup)


async def journaled_cases(cases: Sequence[Case], system: CodeReviewSystem, journal: str | Path) -> set[str]:
    """Ids of the cases whose review ``journal`` holds (a changed case is an error)."""
    fingerprint = _fingerprint(system)
    held = Journal(journal)
    try:
        return {case.id for case in cases if held.check(case.id, fingerprint(case)) is not None}
    finally:
        await held.aclose()


def review_id(case: Case, request: Request) -> str:
    """The custom_id of one reviewer's request about one unit of one function in a batch."""
    return f"{case.id}:{request.metadata['reviewer']}@{request.metadata['unit']}"


def _review_key(case: Case) -> Key:
    # the reviewers name themselves and their unit in each request's metadata
    return lambda request: review_id(case, request)


def _answering(system: CodeReviewSystem, llm: Connection, *, static: bool = True) -> CodeReviewSystem:
    """The review system with its model calls answered by ``llm`` (without its static
    voters when ``static`` is false: planning the calls runs no scanner)."""
    stand_in = copy.copy(system)
    stand_in.llm = llm
    if not static:
        stand_in.static = []
        stand_in.run_options = {**system.run_options, "on_event": None, "budget": None}
    return stand_in


async def plan_reviews(cases: Sequence[Case], system: CodeReviewSystem) -> dict[str, Request]:
    """Every request the reviews of ``cases`` make, by ``review_id``, built as online
    (same units, prompts and structured output for the system's model); nothing is sent."""
    planned: dict[str, Request] = {}
    for case in cases:
        planner = CallPlanner(system.llm, _review_key(case))
        await _answering(system, planner.connection(), static=False).review(case.code, context=CONTEXT)
        planned.update(planner.requests)
    return planned


def _why(done: Outcome[CodeReviewResult]) -> str:
    if isinstance(done.error, NotReviewed):
        return str(done.error)
    return done.error_message or "failed"


def review_failure(review: CodeReviewResult, *, static: Collection[str] = ()) -> str | None:
    """Why a review that ran produced no verdict to score, or ``None`` when it did:
    nothing in the function was reviewed, or every model reviewer failed (the static
    voters, ``static``, scanning alone are not the review being measured)."""
    if not review.reviews:
        skipped = "; ".join(f"{s.reason}" for s in review.skipped)
        return f"nothing was reviewed ({skipped or 'no units'})"
    by_model = [r for r in review.reviews if r.reviewer not in static] or review.reviews
    if any(r.status == "ok" for r in by_model):
        return None
    first = next((r.error for r in by_model if r.error), None)
    return f"every reviewer failed; first: {first or by_model[0].status}"


def score(
    cases: Sequence[Case], reviews: dict[str, CodeReviewResult | None], families: Families, threshold: int
) -> Scores:
    """The metrics at one threshold, over the cases that have a review in ``reviews``
    (a case without one is left out, never counted as "found nothing")."""
    scores = Scores(threshold)
    by_pair: dict[str, dict[str, bool]] = {}
    for case in cases:
        if case.id not in reviews:
            continue
        review = reviews[case.id]
        groups = [g for g in review.groups if g.vote_count >= threshold] if review else []
        pair_cwes = _pair_cwes(cases, case.pair)
        flagged = _score_case(case, groups, pair_cwes, families, scores)
        by_pair.setdefault(case.pair, {})[case.side] = flagged
    for sides in by_pair.values():
        if "before" in sides and "after" in sides:
            scores.pairs += 1
            scores.pairs_right += sides["before"] and not sides["after"]
    return scores


def _score_case(
    case: Case, groups: list[FindingGroup], pair_cwes: set[int], families: Families, scores: Scores
) -> bool:
    """Update ``scores`` with one function; return whether it was flagged (found/alarm)."""
    in_family = [g for g in groups if any(families.same(g.cwe, c) for c in pair_cwes)]
    if case.side == "after":
        scores.after += 1
        scores.false_alarms += bool(in_family)
        return bool(in_family)
    scores.before += 1
    matched = _match(case.labels, in_family, families)
    scores.found += bool(matched)
    scores.family_findings += len(in_family)
    scores.matched_findings += len(matched)
    return bool(matched)


def _match(labels: Sequence[tuple[int, int]], groups: list[FindingGroup], families: Families) -> set[int]:
    """Indices of groups that claim a label (each label claimed at most once)."""
    claimed: set[int] = set()
    for cwe, line in labels:
        for i, group in enumerate(groups):
            near = group.start_line - LINE_SLACK <= line <= group.end_line + LINE_SLACK
            if i not in claimed and near and families.same(group.cwe, cwe):
                claimed.add(i)
                break
    return claimed


def _pair_cwes(cases: Sequence[Case], pair: str) -> set[int]:
    return {cwe for c in cases if c.pair == pair for cwe, _ in c.labels}


def _lines(path: Path) -> list[str]:
    if path.is_dir():
        raise ConfigError(f"evaluation data {path} is a directory: give a JSON lines file")
    try:
        return path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError as exc:
        raise ConfigError(f"evaluation data {path} does not exist") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"evaluation data {path} is not UTF-8 text ({exc.reason} at byte {exc.start})"
        ) from exc


_CASE_KEYS = ("id", "pair", "side", "code")
_LABEL = '{"line": 12, "cwe": "CWE-89"}'


def _case(line: str, number: int, path: Path) -> Case:
    """One line of the data as a case, or a ``ConfigError`` naming the line and the field."""
    where = f"{path}:{number}"
    try:
        raw = json.loads(line)
    except json.JSONDecodeError as exc:
        raise ConfigError(
            f"{where}: not valid JSON ({exc.msg.removesuffix(' at')} at column {exc.colno})"
        ) from exc
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: expected a JSON object with {', '.join(_CASE_KEYS)}, vulnerable_lines")
    missing = [key for key in _CASE_KEYS if raw.get(key) is None]
    if missing:
        raise ConfigError(f"{where}: missing {', '.join(missing)}; every case has {', '.join(_CASE_KEYS)}")
    if raw["side"] not in ("before", "after"):
        raise ConfigError(f'{where}: "side" is "before" or "after", got {raw["side"]!r}')
    if not isinstance(raw["code"], str):
        raise ConfigError(f'{where}: "code" must be a string')
    code = raw["code"]
    labels = _labels(raw.get("vulnerable_lines"), where, lines=len(code.splitlines()))
    return Case(str(raw["id"]), str(raw["pair"]), raw["side"], code, labels)


def _labels(value: Any, where: str, *, lines: int) -> tuple[tuple[int, int], ...]:
    """``vulnerable_lines`` as (cwe, line) pairs, every line inside the code; labels
    without a CWE id are not scored."""
    if value is None:
        return ()
    if not isinstance(value, list):
        raise ConfigError(
            f'{where}: "vulnerable_lines" must be a list of objects like {_LABEL}, got {value!r}'
        )
    labels = []
    for i, label in enumerate(value):
        field_name = f"vulnerable_lines[{i}]"
        if not isinstance(label, dict):
            raise ConfigError(f"{where}: {field_name} must be an object like {_LABEL}, got {label!r}")
        number = label.get("line")
        if not isinstance(number, int) or isinstance(number, bool):
            raise ConfigError(f'{where}: {field_name} "line" must be a whole number, got {number!r}')
        if not 1 <= number <= lines:
            raise ConfigError(
                f"{where}: {field_name} line {number} is outside the code, which has {lines} lines (from 1)"
            )
        cwe = parse_cwe(label.get("cwe"))
        if cwe:
            labels.append((cwe, number))
    return tuple(labels)


def _rate(part: int, whole: int) -> float | None:
    return round(part / whole, 4) if whole else None
