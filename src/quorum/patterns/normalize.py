"""Matching a voter's answer to the allowed options, exactly.

The chapter matched by substring, so "unacceptable" and "not acceptable" both counted as
"acceptable". Here an answer is folded (case, surrounding punctuation and Markdown, and
``_``/``-``/whitespace runs all become one space), then matched: an exact match wins;
otherwise an answer that is the beginning of exactly one option ("reject" for
"rejected", "needs" for "needs_review") matches it; otherwise nothing does, and the vote
is invalid: counted and shown, never a winner.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

_SEPARATORS = re.compile(r"[\s_\-]+")
_EDGES = " \t\r\n.,;:!?\"'`*[](){}<>"
MIN_PREFIX = 3  # shorter fragments ("a", "no") are too ambiguous to count as a choice


def fold(text: str) -> str:
    return _SEPARATORS.sub(" ", text.strip().strip(_EDGES).casefold()).strip()


def normalize_decision(answer: str | None, options: Sequence[str]) -> str | None:
    """The option ``answer`` names, or ``None`` when it names none (or more than one)."""
    if not answer:
        return None
    said = fold(answer)
    if not said:
        return None
    folded = {option: fold(option) for option in options}
    exact = [option for option, f in folded.items() if f == said]
    if len(exact) == 1:
        return exact[0]
    if len(said) < MIN_PREFIX:
        return None
    prefixed = [option for option, f in folded.items() if f.startswith(said)]
    return prefixed[0] if len(prefixed) == 1 else None
