"""The fast local estimate of what a request will cost a rate limiter, before it runs.

Input tokens: about four characters a token over everything the provider reads (system,
messages, schema), plus a few tokens of framing per message. Output tokens: the request's
``max_tokens``, which is what Anthropic itself charges against an output-tokens-per-minute
limit when a request starts. Both are settled against the real usage afterwards.
"""

from __future__ import annotations

from dataclasses import dataclass

from quorum.llm.types import Request

CHARS_PER_TOKEN = 4
FRAMING_TOKENS_PER_MESSAGE = 4


@dataclass(frozen=True, slots=True)
class Cost:
    """What one call charges each kind of limit."""

    requests: int = 1
    input_tokens: int = 0
    output_tokens: int = 0


def estimate(request: Request) -> Cost:
    chars = request.size_hint()
    framing = FRAMING_TOKENS_PER_MESSAGE * (len(request.messages) + 1)
    return Cost(1, -(-chars // CHARS_PER_TOKEN) + framing, request.max_tokens)
