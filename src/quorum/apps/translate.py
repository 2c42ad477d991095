"""The chapter's exercise: one text into many languages at once, the best version voted.

Languages run in parallel (sectioning: one section per language, whose handler does the
language's work). In each language three translator personas (formal, casual,
technical) translate the text, identical translations are grouped (``cluster_vote``),
and when they differ the same personas vote for the best candidate: a nested
``VotingWorkflow`` whose options are the candidate labels "A", "B", "C". A language's
confidence is the winner's share of the votes; at or above ``consensus_threshold`` it is
marked high consensus, below it disputed. A language that fails is reported as failed
while the others go on::

    result = await TranslationWorkflow(llm=llm).run(text, ["fr", "German", "ja"])
    print(result.report())

Budgets, the deadline and cancellation of the enclosing run reach every call, nested
ones included; ``on_event`` sees them, labelled by language.
"""

from __future__ import annotations

import difflib
import re
import string
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import partial

import langcodes

from quorum.apps.translate_report import (
    DISPUTED,
    FAILED,
    HIGH_CONSENSUS,
    Candidate,
    LanguageResult,
    TranslationResult,
)
from quorum.engine import settings
from quorum.engine.budget import Budget
from quorum.engine.collect import run
from quorum.engine.connection import LazyConnection
from quorum.engine.context import nest
from quorum.engine.events import EventSink
from quorum.errors import ConfigError, InvalidReply, TranslationError
from quorum.llm.provider import Provider
from quorum.llm.types import Request
from quorum.patterns.aggregation import cluster_vote, normalize_text
from quorum.patterns.sectioning import Section, SectioningWorkflow, SectionResult
from quorum.patterns.voting import Voter, VotingResult, VotingWorkflow

# The result types live with the report (``translate_report``), which imports nothing
# from here; they are named here too, where the workflow that makes them is.
__all__ = [
    "DEFAULT_PERSONAS",
    "DISPUTED",
    "FAILED",
    "HIGH_CONSENSUS",
    "LANGUAGES",
    "Candidate",
    "LanguageResult",
    "Persona",
    "TranslationError",
    "TranslationResult",
    "TranslationWorkflow",
    "choice_prompt",
    "decide",
    "group_candidates",
    "language_name",
    "language_names",
    "translation_template",
]


@dataclass(frozen=True, slots=True)
class Persona:
    """A translator: a style (its system prompt) and a temperature. It also votes."""

    name: str
    system_prompt: str
    temperature: float = 0.5

    def voter(self) -> Voter:
        return Voter(self.name, self.system_prompt, self.temperature)


DEFAULT_PERSONAS: tuple[Persona, ...] = (
    Persona(
        "formal",
        "You are a formal translator: you write in a polished, professional register and "
        "preserve the meaning of the source precisely.",
        temperature=0.3,
    ),
    Persona(
        "casual",
        "You are a casual translator: you write the way a native speaker would naturally say it, "
        "conversational and idiomatic, never stiff.",
        temperature=0.7,
    ),
    Persona(
        "technical",
        "You are a technical translator: you keep terminology, names, numbers and formatting "
        "exactly, and prefer precise, established terms over paraphrase.",
        temperature=0.2,
    ),
)

LANGUAGES: Mapping[str, str] = {
    "ar": "Arabic", "bn": "Bengali", "ca": "Catalan", "cs": "Czech", "da": "Danish",
    "de": "German", "el": "Greek", "en": "English", "es": "Spanish", "fa": "Persian",
    "fi": "Finnish", "fr": "French", "he": "Hebrew", "hi": "Hindi", "hu": "Hungarian",
    "id": "Indonesian", "it": "Italian", "ja": "Japanese", "ko": "Korean", "nl": "Dutch",
    "no": "Norwegian", "pl": "Polish", "pt": "Portuguese", "pt-br": "Brazilian Portuguese",
    "ro": "Romanian", "ru": "Russian", "sk": "Slovak", "sv": "Swedish", "sw": "Swahili",
    "th": "Thai", "tr": "Turkish", "uk": "Ukrainian", "vi": "Vietnamese",
    "zh": "Chinese (Simplified)", "zh-tw": "Chinese (Traditional)",
}  # fmt: skip
_CODE = re.compile(r"[a-z]{2,3}(-[a-z0-9]{2,8})*")
_NAME = re.compile(r"[^\W\d_]+([ '()-]+[^\W\d_]*)*\)?")
LABELS = string.ascii_uppercase
VOTE_MAX_TOKENS = 512


# -- the workflow --------------------------------------------------------------------------


class TranslationWorkflow:
    """Translate into many languages in parallel; in each, personas translate and vote.

    ``model`` (a model string; ``None`` picks the default) or ``llm`` (a provider or
    connection). ``personas`` translate and then vote; ``consensus_threshold`` is the
    winner's share of the votes that marks a language high consensus; ``max_concurrent``
    caps the languages in progress at once (the connection's limits cap the calls)."""

    llm = LazyConnection()

    def __init__(
        self,
        model: str | None = None,
        *,
        llm: Provider | None = None,
        personas: Sequence[Persona] = DEFAULT_PERSONAS,
        consensus_threshold: float = 0.6,
        max_concurrent: int = 5,
        max_tokens: int = 2048,
    ) -> None:
        _check_personas(personas)
        if not 0 < consensus_threshold <= 1:
            raise ConfigError(
                f"the consensus threshold is the winner's share of the votes, in (0, 1], "
                f"got {consensus_threshold:g}; e.g. 0.6"
            )
        self.model = model
        self.personas = tuple(personas)
        self.consensus_threshold = consensus_threshold
        self.max_concurrent = max_concurrent
        self.max_tokens = max_tokens
        self.llm = llm

    async def run(
        self,
        text: str,
        languages: Sequence[str],
        *,
        on_event: EventSink | None = None,
        budget: Budget | None = None,
    ) -> TranslationResult:
        """Translate ``text`` into every language (codes like ``fr`` or names like
        ``French``). ``on_event`` and ``budget`` (by default, those of the run settings in
        force, ``quorum.engine.settings.use``) reach every call, nested ones included."""
        if not text.strip():
            raise ConfigError("there is nothing to translate: the text is empty")
        names = language_names(languages)
        started = time.perf_counter()
        sections = [
            Section(name, translation_template(name), handler=partial(self._language, name, text))
            for name in names
        ]
        workflow = SectioningWorkflow(max_concurrent=self.max_concurrent, llm=self.llm)
        chosen = settings.current()
        with nest(on_event=on_event or chosen.on_event, budget=budget or chosen.budget):
            done = await workflow.run(sections, text, merge_results=False)
        return TranslationResult(
            text=text,
            languages={name: _language_result(done.sections[name]) for name in names},
            consensus_threshold=self.consensus_threshold,
            execution_time=time.perf_counter() - started,
            usage=done.usage,
            cost=done.cost,
            summary=done.summary,
        )

    async def _language(self, language: str, text: str, prompt: str) -> LanguageResult:
        """One language: every persona translates, then they vote if they disagree."""
        with nest(language):
            candidates, errors = await self._translate(prompt)
            if not candidates:
                raise TranslationError(f"every translator failed: {_listing(errors)}")
            ballot = await self._vote(language, text, candidates)
        return decide(
            language,
            candidates,
            ballot,
            personas=len(self.personas),
            threshold=self.consensus_threshold,
            errors=errors,
        )

    async def _translate(self, prompt: str) -> tuple[list[Candidate], dict[str, str]]:
        done = await run(
            partial(self._ask, prompt),
            self.personas,
            concurrency=len(self.personas),
            ids=lambda _i, persona: persona.name,
        )
        drafts: list[tuple[str, str]] = []
        errors: dict[str, str] = {}
        for persona, outcome in zip(self.personas, done.outcomes, strict=True):
            if outcome.ok and outcome.value is not None:
                drafts.append((persona.name, outcome.value))
            else:
                errors[persona.name] = outcome.error_message or "failed"
        return group_candidates(drafts), errors

    async def _ask(self, prompt: str, persona: Persona) -> str:
        request = Request.of(
            prompt, system=persona.system_prompt, temperature=persona.temperature, max_tokens=self.max_tokens
        )
        reply = await self.llm.complete(request)
        if reply.truncated:
            raise InvalidReply(
                f"the translation was cut off at max_tokens={self.max_tokens}; raise max_tokens",
                text=reply.text,
            )
        if not reply.text.strip():
            raise InvalidReply("the translator answered with an empty text")
        return reply.text.strip()

    async def _vote(self, language: str, text: str, candidates: list[Candidate]) -> VotingResult | None:
        """The personas' vote among the candidates; ``None`` when there is only one."""
        if len(candidates) == 1:
            return None
        voting = VotingWorkflow(
            llm=self.llm, consensus_threshold=self.consensus_threshold, max_tokens=VOTE_MAX_TOKENS
        )
        voters = [persona.voter() for persona in self.personas]
        return await voting.run(
            voters, choice_prompt(language, text, candidates), [c.label for c in candidates]
        )


# -- prompts, candidates and the decision ----------------------------------------------------


def _listing(errors: Mapping[str, str]) -> str:
    """``reason (who, who)`` per distinct reason: the same failure is said once."""
    by_reason: dict[str, list[str]] = {}
    for name, why in errors.items():
        by_reason.setdefault(why, []).append(name)
    return "; ".join(f"{why} ({', '.join(names)})" for why, names in by_reason.items())


def translation_template(language: str) -> str:
    """The section's prompt template for one language (``{input}`` is the text)."""
    return (
        f"Translate the following text into {language}. Reply with the translation only, "
        "with no notes, quotes or preamble.\n\nText:\n{input}"
    )


def choice_prompt(language: str, text: str, candidates: Sequence[Candidate]) -> str:
    listing = "\n\n".join(f"{c.label}:\n{c.text}" for c in candidates)
    return (
        f"These are candidate translations of the same text into {language}. Choose the one "
        f"that best preserves the meaning of the source and reads most naturally in {language}."
        f"\n\nSource text:\n{text}\n\nCandidates:\n\n{listing}"
    )


def group_candidates(drafts: Sequence[tuple[str, str]]) -> list[Candidate]:
    """``(persona, translation)`` pairs as candidates labelled A, B, C... in persona order;
    translations that differ only in case, punctuation or spacing are one candidate."""
    clusters = cluster_vote([translation for _persona, translation in drafts])
    candidates = []
    for label, wording in zip(LABELS, clusters.counts, strict=False):
        key = normalize_text(wording)
        authors = tuple(persona for persona, translation in drafts if normalize_text(translation) == key)
        candidates.append(Candidate(label, wording, authors))
    return candidates


def decide(
    language: str,
    candidates: list[Candidate],
    ballot: VotingResult | None,
    *,
    personas: int,
    threshold: float,
    errors: dict[str, str],
) -> LanguageResult:
    """The language's translation, confidence and status from its candidates and vote
    (``None`` when there was a single candidate, so nothing to vote on)."""
    result = LanguageResult(language, DISPUTED, candidates=candidates, translator_errors=errors)
    if ballot is None:  # one candidate: its share of the personas is the agreement
        only = candidates[0]
        result.winner, result.translation = only.label, only.text
        result.confidence = len(only.personas) / personas
    else:
        shown = ballot.winner or (ballot.tied[0] if ballot.tied else candidates[0].label)
        result.winner, result.confidence = ballot.winner, ballot.agreement
        result.translation = next(c.text for c in candidates if c.label == shown)
        result.votes, result.vote_counts = ballot.votes, ballot.vote_counts
        if ballot.votes and ballot.failed == len(ballot.votes):
            result.error = f"every vote failed; first: {ballot.votes[0].error}"
    agreed = result.winner is not None and result.confidence >= threshold
    result.status = HIGH_CONSENSUS if agreed else DISPUTED
    return result


def _language_result(section: SectionResult) -> LanguageResult:
    detail = section.detail
    if section.success and isinstance(detail, LanguageResult):
        result = detail
    else:
        result = LanguageResult(section.name, FAILED, error=section.error or "failed")
    result.execution_time, result.usage, result.cost = section.execution_time, section.usage, section.cost
    return result


# -- languages ---------------------------------------------------------------------------------


def language_names(specs: Sequence[str]) -> list[str]:
    """Language names for codes or names, each once, in the order given."""
    names = [language_name(spec) for spec in specs if spec.strip()]
    if not names:
        raise ConfigError("give at least one target language, e.g. --to fr,de,ja")
    seen: set[str] = set()
    for name in names:
        if name in seen:
            raise ConfigError(f"{name} is asked for twice; give each language once")
        seen.add(name)
    return names


def language_name(spec: str) -> str:
    """``fr`` → ``French``; ``french`` → ``French``; another language tag (``tl``,
    ``pt-PT``) or English language name (``Tagalog``) is checked against the IETF
    registry (``langcodes``); anything else is refused, with a near miss suggested."""
    text = spec.strip()
    key = text.lower().replace("_", "-")
    if key in LANGUAGES:
        return LANGUAGES[key]
    known = {name.lower(): name for name in LANGUAGES.values()}
    if key in known:
        return known[key]
    if _CODE.fullmatch(key) and langcodes.tag_is_valid(key):
        language = langcodes.Language.get(key)
        name = str(language.display_name())
        if language.is_valid() and language.language not in (None, "und") and "Unknown" not in name:
            return name
    if _NAME.fullmatch(text) and not _CODE.fullmatch(key) and _is_language_name(text):
        return text.title() if text.islower() else text
    raise ConfigError(
        f"{spec!r} is not a language code or name{_near_miss(key, known)}: give a code such as "
        "fr or pt-br, or an English name such as French or Tagalog"
    )


def _is_language_name(text: str) -> bool:
    try:
        langcodes.find(text)
    except LookupError:
        return False
    return True


def _near_miss(key: str, known: Mapping[str, str]) -> str:
    """`` (did you mean French?)`` for a close spelling of a code or name quorum lists."""
    close = difflib.get_close_matches(key, [*LANGUAGES, *known], n=1, cutoff=0.6)
    if not close:
        prefix = key.split("-")[0]
        close = [prefix] if prefix in LANGUAGES and prefix != key else []
    if not close:
        return ""
    match = close[0]
    shown = f"{match} ({LANGUAGES[match]})" if match in LANGUAGES else known[match]
    return f" (did you mean {shown}?)"


def _check_personas(personas: Sequence[Persona]) -> None:
    if not personas:
        raise ConfigError("translation needs at least one persona")
    if len(personas) > len(LABELS):
        raise ConfigError(f"at most {len(LABELS)} personas: candidates are labelled A to Z")
    names = [p.name for p in personas]
    if len(set(names)) != len(names):
        raise ConfigError(f"persona names must be unique, got {names}")
