"""The data every provider speaks: ``Request`` in, ``Reply`` out, ``Usage`` counted."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from quorum.llm.ratelimits import RateLimitInfo

Role = Literal["user", "assistant"]


@dataclass(frozen=True, slots=True)
class Message:
    role: Role
    content: str


@dataclass(frozen=True, slots=True)
class Usage:
    """Tokens one call used. Cache figures are Anthropic prompt-caching counts (or
    OpenAI's cached prompt tokens as reads); ``input_tokens`` excludes them."""

    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            self.input_tokens + other.input_tokens,
            self.output_tokens + other.output_tokens,
            self.cache_read_tokens + other.cache_read_tokens,
            self.cache_write_tokens + other.cache_write_tokens,
        )

    @property
    def prompt_tokens(self) -> int:
        """Every input token, cached or not: what an input-tokens-per-minute limit counts."""
        return self.input_tokens + self.cache_read_tokens + self.cache_write_tokens

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.output_tokens

    def as_json(self) -> dict[str, int]:
        """Input (cached included) and output tokens, as the commands' JSON reports them."""
        return {"input_tokens": self.prompt_tokens, "output_tokens": self.output_tokens}


@dataclass(frozen=True, slots=True)
class Request:
    """One call to a model.

    ``schema`` asks for a structured answer: a JSON schema (an object schema) that the
    provider's native mechanism enforces (Anthropic tool use, OpenAI ``response_format``,
    llama.cpp grammar); the parsed answer comes back as ``Reply.data``.
    ``prefix`` is shared context that many requests have in common (a document, code under
    review): it goes first, before the system prompt, so that requests differing only in
    their system prompt or question still share a prompt prefix. ``cache_prefix`` marks
    that prefix (or, without one, the system prompt) cacheable (Anthropic prompt caching;
    OpenAI caches long shared prefixes by itself).
    ``on_first_byte`` is called once when the answer starts to arrive; the cache-aware
    fan-out uses it to release the calls that can then read the leader's cache entry.
    """

    messages: tuple[Message, ...]
    system: str | None = None
    prefix: str | None = None
    max_tokens: int = 1024
    temperature: float | None = None
    schema: Mapping[str, Any] | None = None
    schema_name: str = "answer"
    stop: tuple[str, ...] = ()
    seed: int | None = None
    cache_prefix: bool = False
    metadata: Mapping[str, str] = field(default_factory=dict)
    on_first_byte: Callable[[], None] | None = field(default=None, compare=False, repr=False)

    @classmethod
    def of(
        cls,
        prompt: str,
        *,
        system: str | None = None,
        history: Sequence[Message] = (),
        **options: Any,
    ) -> Request:
        """A request for one user prompt, optionally after earlier turns."""
        return cls(messages=(*history, Message("user", prompt)), system=system, **options)

    @property
    def full_system(self) -> str | None:
        """Prefix and system prompt as one text, for providers without system blocks."""
        parts = [p for p in (self.prefix, self.system) if p]
        return "\n\n".join(parts) if parts else None

    @property
    def text(self) -> str:
        """System and message text joined: what scripted replies match against."""
        parts = [self.prefix or "", self.system or ""] + [m.content for m in self.messages]
        return "\n".join(p for p in parts if p)

    def size_hint(self) -> int:
        """Characters the provider will read, schema included: the base of token estimates."""
        size = len(self.text)
        if self.schema is not None:
            size += len(json.dumps(self.schema))
        return size


@dataclass(frozen=True, slots=True)
class Reply:
    """What came back. ``data`` is the parsed structured answer when the request had a
    schema. ``cost`` is in dollars, ``None`` when the model's price is unknown (never 0
    by guess). ``rate_limits`` is what the provider's headers said about remaining quota."""

    text: str
    model: str
    usage: Usage = Usage()
    data: Any = None
    stop_reason: str | None = None
    latency_s: float = 0.0
    cost: float | None = None
    rate_limits: RateLimitInfo | None = None
    raw: Any = field(default=None, compare=False, repr=False)

    @property
    def truncated(self) -> bool:
        """The answer hit ``max_tokens`` and was cut off."""
        return self.stop_reason in ("max_tokens", "length")
