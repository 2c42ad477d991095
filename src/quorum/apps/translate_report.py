"""How a translation run reads: plain JSON data (``--json``) and the merged Markdown
report that marks each language high-consensus, disputed or failed."""

from __future__ import annotations

from typing import Any

from quorum.apps.translate import (
    DISPUTED,
    FAILED,
    HIGH_CONSENSUS,
    Candidate,
    LanguageResult,
    TranslationResult,
)


def to_dict(result: TranslationResult) -> dict[str, Any]:
    """The result as plain JSON data."""
    return {
        "text": result.text,
        "consensus_threshold": result.consensus_threshold,
        "execution_time": round(result.execution_time, 3),
        "languages": [_language_dict(r) for r in result.languages.values()],
        "usage": result.usage.as_json(),
        "cost": result.cost,
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
        "translator_errors": r.translator_errors,
        "error": r.error,
        "execution_time": round(r.execution_time, 3),
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
        return f"{head}\n\nThis language failed: {r.error}"
    parts = [f"{head}, confidence {r.confidence:.0%}", r.translation or ""]
    if r.votes:
        parts += [_candidate(c, r) for c in r.candidates]
    else:
        who = ", ".join(r.candidates[0].personas) if r.candidates else "none"
        parts.append(f"No vote was needed: every translator who answered wrote this ({who}).")
    parts += [f"Note: {r.error}"] if r.error else []
    parts += [f"Translator {name} failed: {why}" for name, why in r.translator_errors.items()]
    return "\n\n".join(parts)


def _candidate(c: Candidate, r: LanguageResult) -> str:
    votes = r.vote_counts.get(c.label, 0)
    chosen = " (chosen)" if c.text == r.translation else ""
    noun = "vote" if votes == 1 else "votes"
    return f"**{c.label}**{chosen} by {', '.join(c.personas)}: {votes} {noun}\n\n{_quote(c.text)}"


def _quote(text: str) -> str:
    return "\n".join(f"> {line}" if line else ">" for line in text.strip().splitlines())
