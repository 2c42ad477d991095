"""What a translation run gives back and how it reads: the result types, plain JSON data
(``--json``) and the merged Markdown report that marks each language high-consensus,
disputed or failed. ``quorum.apps.translate`` does the work and imports this module;
this module imports nothing from it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from quorum.apps.totals import SCHEMA_VERSION, totals
from quorum.engine.outcome import Summary
from quorum.llm.secrets import redact
from quorum.llm.types import Usage
from quorum.patterns.voting import Vote

HIGH_CONSENSUS = "high-consensus"
DISPUTED = "disputed"
FAILED = "failed"


# -- results -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Candidate:
    """One distinct translation: the option voters choose (``label``), its text, and the
    personas who wrote it (identical translations are one candidate)."""

    label: str
    text: str
    personas: tuple[str, ...]


@dataclass
class LanguageResult:
    """One language's outcome. ``status``: ``high-consensus``, ``disputed`` or ``failed``.
    ``translation`` is the winner's text; on a tie (``winner`` is ``None``) the first tied
    candidate's, and the language is disputed. ``confidence`` is the winner's share of the
    valid votes (with a single candidate, the share of personas who wrote it)."""

    language: str
    status: str
    translation: str | None = None
    winner: str | None = None
    confidence: float = 0.0
    candidates: list[Candidate] = field(default_factory=list)
    votes: list[Vote] = field(default_factory=list)
    vote_counts: dict[str, int] = field(default_factory=dict)
    translator_errors: dict[str, str] = field(default_factory=dict)
    error: str | None = None
    execution_time: float = 0.0
    usage: Usage = field(default_factory=Usage)
    cost: float | None = None

    @property
    def success(self) -> bool:
        return self.status != FAILED

    @property
    def content(self) -> str:
        """What the language's section shows: the chosen translation."""
        return self.translation or ""


@dataclass
class TranslationResult:
    """Every language asked for, in order, failed ones included, and the run's totals."""

    text: str
    languages: dict[str, LanguageResult]
    consensus_threshold: float
    execution_time: float
    usage: Usage = field(default_factory=Usage)
    cost: float | None = None
    summary: Summary = field(default_factory=Summary)

    @property
    def translations(self) -> dict[str, str]:
        """Language → chosen translation, for the languages that did not fail."""
        return {name: r.translation for name, r in self.languages.items() if r.translation is not None}

    @property
    def failed(self) -> list[str]:
        return [name for name, r in self.languages.items() if not r.success]

    def with_status(self, status: str) -> list[str]:
        return [name for name, r in self.languages.items() if r.status == status]

    def report(self) -> str:
        """All translations with their confidence and status, as Markdown."""
        return markdown(self)


def to_dict(result: TranslationResult) -> dict[str, Any]:
    """The result as plain JSON data."""
    return {
        "schema_version": SCHEMA_VERSION,
        "text": result.text,
        "consensus_threshold": result.consensus_threshold,
        "languages": [_language_dict(r) for r in result.languages.values()],
        "summary": {"languages": len(result.languages), **totals(result.summary)},
    }


def _language_dict(r: LanguageResult) -> dict[str, Any]:
    return {
        "language": r.language,
        "status": r.status,
        "translation": r.translation,
        "winner": r.winner,
        "confidence": round(r.confidence, 4),
        "vote_counts": r.vote_counts,
        "candidates": [
            {"label": c.label, "text": c.text, "personas": list(c.personas)} for c in r.candidates
        ],
        "votes": {v.voter_name: v.decision for v in r.votes},
        "translator_errors": {name: redact(why) for name, why in r.translator_errors.items()},
        "error": redact(r.error) if r.error else None,
        "wall_s": round(r.execution_time, 3),
        "usage": r.usage.as_json(),
        "cost_usd": r.cost,
    }


# -- the merged report -------------------------------------------------------------------------


def markdown(result: TranslationResult) -> str:
    """Every language with its translation, confidence and status; failures reported."""
    parts = [
        "# Translations",
        _overview(result),
        "## Source\n\n" + _quote(result.text),
        _table(result),
        *(_language_section(r) for r in result.languages.values()),
    ]
    return "\n\n".join(parts) + "\n"


def _overview(result: TranslationResult) -> str:
    counts = [
        f"{len(result.with_status(status))} {status.replace('-', ' ')}"
        for status in (HIGH_CONSENSUS, DISPUTED, FAILED)
    ]
    return (
        f"{len(result.languages)} languages: {', '.join(counts)} "
        f"(high consensus: confidence of {result.consensus_threshold:.0%} or more), "
        f"in {result.execution_time:.2f}s."
    )


def _table(result: TranslationResult) -> str:
    rows = ["| Language | Status | Confidence | Chosen | Time |", "| --- | --- | --- | --- | --- |"]
    for r in result.languages.values():
        confidence = f"{r.confidence:.0%}" if r.success else "–"
        rows.append(
            f"| {r.language} | {r.status.replace('-', ' ')} | {confidence} | {_chosen(r)} "
            f"| {r.execution_time:.2f}s |"
        )
    return "\n".join(rows)


def _chosen(r: LanguageResult) -> str:
    candidate = next((c for c in r.candidates if c.text == r.translation), None)
    if candidate is None:
        return "–"
    tie = " (tie)" if r.winner is None else ""
    return f"{candidate.label}: {', '.join(candidate.personas)}{tie}"


def _language_section(r: LanguageResult) -> str:
    head = f"## {r.language}: {r.status.replace('-', ' ')}"
    if not r.success:
        return f"{head}\n\nThis language failed: {redact(r.error or 'failed')}"
    parts = [f"{head}, confidence {r.confidence:.0%}", r.translation or ""]
    if r.votes:
        parts += [_candidate(c, r) for c in r.candidates]
    else:
        who = ", ".join(r.candidates[0].personas) if r.candidates else "none"
        parts.append(f"No vote was needed: every translator who answered wrote this ({who}).")
    parts += [f"Note: {redact(r.error)}"] if r.error else []
    parts += [f"Translator {name} failed: {redact(why)}" for name, why in r.translator_errors.items()]
    return "\n\n".join(parts)


def _candidate(c: Candidate, r: LanguageResult) -> str:
    votes = r.vote_counts.get(c.label, 0)
    chosen = " (chosen)" if c.text == r.translation else ""
    noun = "vote" if votes == 1 else "votes"
    return f"**{c.label}**{chosen} by {', '.join(c.personas)}: {votes} {noun}\n\n{_quote(c.text)}"


def _quote(text: str) -> str:
    return "\n".join(f"> {line}" if line else ">" for line in text.strip().splitlines())
