"""Aggregation strategies, as plain functions over answers.

``tally`` is the one counting routine; the others are views on it. Ties are explicit: a
tie has no winner and lists the tied answers, instead of being broken by whichever the
dictionary happened to see first.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Hashable, Iterable, Sequence
from dataclasses import dataclass, field

from quorum.engine.connection import connect
from quorum.errors import ConfigError
from quorum.llm.provider import Provider
from quorum.llm.types import Request

CONFIDENCE_WEIGHT = {"high": 1.0, "medium": 0.7, "low": 0.4}


@dataclass(frozen=True, slots=True)
class Tally:
    """Counts (or weights) per answer; ``winner`` is ``None`` on a tie or with no votes."""

    counts: dict[str, float] = field(default_factory=dict)
    winner: str | None = None
    tied: tuple[str, ...] = ()

    @property
    def total(self) -> float:
        return sum(self.counts.values())

    @property
    def share(self) -> float:
        """The leader's share of all votes (0 with no votes)."""
        if not self.counts or self.total <= 0:
            return 0.0
        return max(self.counts.values()) / self.total

    def ranked(self) -> list[tuple[str, float]]:
        return sorted(self.counts.items(), key=lambda kv: (-kv[1], kv[0]))


def tally(weighted: Iterable[tuple[str, float]]) -> Tally:
    counts: dict[str, float] = {}
    for answer, weight in weighted:
        counts[answer] = counts.get(answer, 0.0) + weight
    if not counts:
        return Tally()
    best = max(counts.values())
    leaders = tuple(sorted(a for a, c in counts.items() if c == best))
    if len(leaders) > 1:
        return Tally(counts, None, leaders)
    return Tally(counts, leaders[0])


def majority_vote(votes: Sequence[str]) -> str | None:
    """The most common vote; ``None`` on a tie or with no votes (see ``tally`` for detail)."""
    return tally((v, 1.0) for v in votes).winner


def consensus_vote(votes: Sequence[str], threshold: float = 0.7) -> tuple[str | None, bool]:
    """``(winner, reached)``: the winner and whether its share meets ``threshold``.
    A tie has no winner and no consensus."""
    _check_threshold(threshold)
    result = tally((v, 1.0) for v in votes)
    return result.winner, result.winner is not None and result.share >= threshold


def weighted_vote(
    votes: Iterable[tuple[str, float, str | None]], *, confidence_weight: dict[str, float] | None = None
) -> Tally:
    """Votes as ``(answer, voter_weight, stated_confidence)``: each counts its voter's
    weight times a factor for its stated confidence (high 1.0, medium 0.7, low 0.4;
    unstated or unknown 0.7)."""
    factors = confidence_weight or CONFIDENCE_WEIGHT
    default = factors.get("medium", 0.7)
    return tally(
        (answer, weight * factors.get((confidence or "").strip().lower(), default))
        for answer, weight, confidence in votes
    )


_PUNCT = re.compile(r"[^\w\s]")


def normalize_text(text: str) -> str:
    """Case, punctuation and whitespace folded: "Paris." and " paris" are one answer."""
    return " ".join(_PUNCT.sub(" ", text.casefold()).split())


def cluster_vote(
    answers: Sequence[str],
    *,
    same: Callable[[str, str], bool] | None = None,
    key: Callable[[str], Hashable] = normalize_text,
    weights: Sequence[float] | None = None,
) -> Tally:
    """Free-text voting: equivalent answers are grouped before counting.

    By default two answers are equivalent when ``key`` (normalised text) gives the same
    value; pass ``same(a, b)`` (an embedding similarity above a threshold, a numeric
    comparison...) to group by your own rule. Each group is named by its most common
    original wording (ties to the earliest)."""
    weights = weights or [1.0] * len(answers)
    if len(weights) != len(answers):
        raise ConfigError(f"{len(weights)} weights for {len(answers)} answers")
    groups: list[list[int]] = []
    for i, answer in enumerate(answers):
        home = next((g for g in groups if _equivalent(answers[g[0]], answer, same, key)), None)
        if home is None:
            groups.append([i])
        else:
            home.append(i)
    return tally((_label(answers, g), sum(weights[i] for i in g)) for g in groups)


def _equivalent(
    a: str, b: str, same: Callable[[str, str], bool] | None, key: Callable[[str], Hashable]
) -> bool:
    return same(a, b) if same is not None else key(a) == key(b)


def _label(answers: Sequence[str], group: list[int]) -> str:
    wordings = [answers[i].strip() for i in group]
    return max(wordings, key=lambda w: (wordings.count(w), -wordings.index(w)))


SYNTHESIS_PROMPT = """You have received multiple results for the same task.
Task: {task_description}

Here are the results:

{combined}

Please synthesize these into a single, coherent response that:
1. Incorporates the best elements from each result
2. Resolves any contradictions thoughtfully
3. Maintains consistency in tone and style

Synthesized result:"""


async def merge_and_synthesize(
    results: list[str], llm: Provider | str | None, task_description: str, *, max_tokens: int = 2048
) -> str:
    """Ask a model to merge several results into one (the chapter's prompt). ``llm`` is a
    provider or connection, a model string, or ``None`` for the default model; the call
    goes through the engine's retry layer."""
    combined = "\n\n---\n\n".join(f"Result {i + 1}:\n{r}" for i, r in enumerate(results))
    prompt = SYNTHESIS_PROMPT.format(task_description=task_description, combined=combined)
    reply = await connect(llm).complete(Request.of(prompt, max_tokens=max_tokens))
    return reply.text


def _check_threshold(threshold: float) -> None:
    if not 0 < threshold <= 1:
        raise ConfigError(f"a consensus threshold is a share in (0, 1], got {threshold}")
