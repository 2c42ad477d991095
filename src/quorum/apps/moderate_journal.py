"""What ``quorum moderate --journal`` keeps per text: its vote as JSON, and back.

The journal (``quorum.engine.jobs``) stores each finished text's ``VotingResult``
without the parts that only a live run has (the prompt-cache report and the run summary),
so a resumed text gets the same verdict line as when it was judged. The fingerprint of a
text covers the ballot too (moderators, options, threshold): resuming with another ballot
is an error naming the text, unless the job is restarted.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, fields
from typing import Any

from quorum.engine.jobs import content_hash
from quorum.llm.types import Usage
from quorum.patterns.voting import Vote, Voter, VotingResult

_LIVE_ONLY = ("cache", "summary")


def result_to_json(result: VotingResult) -> dict[str, Any]:
    data = {f.name: getattr(result, f.name) for f in fields(result) if f.name not in _LIVE_ONLY}
    data["votes"] = [asdict(vote) for vote in result.votes]
    data["usage"] = asdict(result.usage)
    return data


def result_from_json(data: dict[str, Any]) -> VotingResult:
    votes = [Vote(**{**vote, "usage": Usage(**vote["usage"])}) for vote in data["votes"]]
    return VotingResult(**{**data, "votes": votes, "usage": Usage(**data["usage"])})


def ballot_fingerprint(text: str, voters: Sequence[Voter], options: Sequence[str], threshold: float) -> str:
    """A text's content and the ballot it is judged by."""
    ballot = [[v.name, v.system_prompt, v.temperature, v.weight] for v in voters]
    return content_hash([text, ballot, list(options), threshold])
