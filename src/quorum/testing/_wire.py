"""What both emulated APIs share: a parsed call, and the scripted answer to it.

Each API module turns its wire format into a ``Call`` (a ``quorum.llm.types.Request``
plus the wire details that shape the reply). The answer comes from the fake provider's
rules, exactly as ``FakeProvider`` would give it, and is either ``Content`` to send or a
``Fault`` to act out (an HTTP error, a reset, a hang, a broken body).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from quorum import errors
from quorum.llm.fake import Rule, estimate_tokens, scripted_answer
from quorum.llm.types import Reply, Request, Usage
from quorum.testing._cache import CachePlan, Prefix
from quorum.testing._limits import BucketState

StopReason = Literal["end_turn", "max_tokens", "stop_sequence"]

# Fault kinds: HTTP statuses as text, or what happens instead of a response.
FAULT_KINDS = ("400", "401", "404", "429", "500", "529", "reset", "hang", "malformed")


class WireError(Exception):
    """A request the real API would refuse: carries the HTTP status to answer with."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True, slots=True)
class Call:
    """One parsed API call. ``tool`` names the forced tool (Anthropic) or the schema
    (OpenAI) when a structured answer was asked for; ``prefixes`` are its cacheable
    prefixes, shortest first."""

    request: Request
    model: str
    stream: bool = False
    tool: str | None = None
    prefixes: tuple[Prefix, ...] = ()
    include_usage: bool = False  # OpenAI streams carry usage only when asked

    @property
    def input_tokens(self) -> int:
        """The whole prompt, by the same estimate as the fake provider."""
        return estimate_tokens(self.request.text)


@dataclass(frozen=True, slots=True)
class Content:
    """What the model says. ``data`` is the JSON object when a structured answer was
    asked for and the script gave one; ``text`` is then its JSON text."""

    text: str
    data: dict[str, Any] | None
    stop_reason: StopReason
    stop_sequence: str | None = None

    @property
    def output_tokens(self) -> int:
        return estimate_tokens(self.text)


@dataclass(frozen=True, slots=True)
class Fault:
    kind: str
    message: str
    retry_after: int | None = None


class WireApi(Protocol):
    """One emulated API: how it parses, answers, fails and reports limits."""

    path: str
    request_id_header: str

    def authorized(self, headers: Mapping[str, str]) -> bool: ...
    def parse(self, body: Any, headers: Mapping[str, str]) -> Call: ...
    def usage(self, call: Call, content: Content, plan: CachePlan) -> Usage: ...
    def message(self, call: Call, content: Content, usage: Usage, ident: str) -> bytes: ...
    def events(self, call: Call, content: Content, usage: Usage, ident: str) -> tuple[bytes, bytes]: ...
    def error(self, status: int, message: str) -> bytes: ...
    def malformed(self, stream: bool) -> bytes: ...
    def limit_headers(self, states: Mapping[str, BucketState]) -> list[tuple[str, str]]: ...


def answer(rules: Sequence[Rule], call: Call) -> tuple[Content | Fault, float | None]:
    """The scripted answer to a call and the rule's latency, if it set one."""
    raw, latency = scripted_answer(rules, call.request)
    if isinstance(raw, Exception):
        return fault_of(raw), latency
    return content_of(raw, call), latency


def fault_of(exc: Exception) -> Fault:
    """The wire failure that makes an SDK raise what the fake provider raises."""
    message = str(exc)
    for cls, kind in _FAULT_BY_ERROR:
        if isinstance(exc, cls):
            wait = getattr(exc, "retry_after", None)
            return Fault(kind, message, math.ceil(wait) if wait is not None else None)
    return Fault("500", message)


_FAULT_BY_ERROR: tuple[tuple[type[Exception], str], ...] = (
    (errors.RateLimited, "429"),
    (errors.Overloaded, "529"),
    (errors.ServerError, "500"),
    (errors.Timeout, "hang"),
    (errors.ConnectionFailed, "reset"),
    (errors.BadRequest, "400"),
    (errors.AuthError, "401"),
    (errors.NotFound, "404"),
    (errors.InvalidReply, "malformed"),
    (errors.MalformedReply, "malformed"),
)


def content_of(raw: Any, call: Call) -> Content:
    """Scripted text or data, shaped as the model's answer and cut like a model's would be."""
    text, data = _text_and_data(raw, structured=call.tool is not None)
    stop: StopReason = "end_turn"
    sequence = None
    if data is None:
        text, sequence = _cut_at_stop(text, call.request.stop)
        stop = "stop_sequence" if sequence is not None else "end_turn"
    budget = call.request.max_tokens
    if estimate_tokens(text) > budget:
        # About four characters a token (the same estimate as usage): keep what fits.
        return Content(text[: budget * 4], None, "max_tokens")
    return Content(text, data, stop, sequence)


def _text_and_data(raw: Any, *, structured: bool) -> tuple[str, dict[str, Any] | None]:
    if isinstance(raw, Reply):
        raw = raw.data if structured and raw.data is not None else raw.text
    if isinstance(raw, str):
        data = _json_object(raw) if structured else None
        return raw, data
    text = json.dumps(raw)
    return text, raw if structured and isinstance(raw, dict) else None


def _json_object(text: str) -> dict[str, Any] | None:
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        return None
    return value if isinstance(value, dict) else None


def _cut_at_stop(text: str, stops: Sequence[str]) -> tuple[str, str | None]:
    found = [(text.find(s), s) for s in stops if s and s in text]
    if not found:
        return text, None
    at, sequence = min(found)
    return text[:at], sequence
