"""The fake provider: deterministic scripted replies for tests, examples and your own tests.

A script is a list of rules; the first whose ``match`` regex is found in the request's
system and user text answers::

    [
      {"match": "SQL", "reply": "DECISION: rejected"},
      {"match": "vote", "data": {"decision": "acceptable", "confidence": "high"}},
      {"match": "flaky", "error": "rate_limited"},
      {"match": ".", "reply": "{\\"decision\\": \\"needs_review\\"}", "latency": 0.2}
    ]

``data`` is the structured answer given when the request carries a schema; a rule with
only ``reply`` whose text parses as JSON serves that JSON as ``data`` too. ``error``
raises one of ``ERRORS`` instead of answering; ``latency`` (seconds) delays the answer.
Without a matching rule the answer is an echo of the prompt, or, when a schema is asked
for, the simplest value that fits it. Python users can pass a function instead of rules.
The same rules drive ``quorum emulate --script``.
"""

from __future__ import annotations

import asyncio
import json
import random
import re
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from quorum import errors
from quorum.llm.pricing import Price, cost_of
from quorum.llm.provider import Capabilities
from quorum.llm.schema import check
from quorum.llm.types import Reply, Request, Usage

ERRORS: dict[str, Callable[[str], errors.ProviderError]] = {
    "rate_limited": lambda m: errors.RateLimited(m, status=429, retry_after=1.0, provider="fake"),
    "overloaded": lambda m: errors.Overloaded(m, status=529, provider="fake"),
    "server_error": lambda m: errors.ServerError(m, status=500, provider="fake"),
    "timeout": lambda m: errors.Timeout(m, provider="fake"),
    "connection": lambda m: errors.ConnectionFailed(m, provider="fake"),
    "bad_request": lambda m: errors.BadRequest(m, status=400, provider="fake"),
    "auth": lambda m: errors.AuthError(m, status=401, provider="fake"),
    "not_found": lambda m: errors.NotFound(m, status=404, provider="fake"),
    "invalid_reply": lambda m: errors.InvalidReply(m, provider="fake"),
    "malformed": lambda m: errors.MalformedReply(m, status=200, provider="fake"),
}

Answer = str | Mapping[str, Any] | Reply | Exception
Responder = Callable[[Request], Answer | Awaitable[Answer]]


@dataclass(frozen=True, slots=True)
class Rule:
    pattern: re.Pattern[str]
    reply: str | None = None
    data: Any = None
    error: str | None = None
    latency: float | None = None

    def answer(self, request: Request) -> Answer:
        if self.error is not None:
            return ERRORS[self.error](f"scripted {self.error} for /{self.pattern.pattern}/")
        if request.schema is not None and self.data is not None:
            return self.data  # type: ignore[no-any-return]
        return self.reply if self.reply is not None else json.dumps(self.data)


def rule_from(raw: Any, index: int) -> Rule:
    """One rule from its JSON form, with errors that point at the rule."""
    where = f"rule {index}"
    if not isinstance(raw, dict):
        raise errors.ConfigError(f"{where}: expected an object with 'match', got {raw!r}")
    unknown = set(raw) - {"match", "reply", "data", "error", "latency"}
    if unknown:
        raise errors.ConfigError(
            f"{where}: unknown keys {sorted(unknown)}; allowed: match, reply, data, error, latency"
        )
    if not isinstance(raw.get("match"), str):
        raise errors.ConfigError(f"{where}: 'match' must be a regular expression string")
    try:
        pattern = re.compile(raw["match"])
    except re.error as exc:
        raise errors.ConfigError(f"{where}: 'match' is not a valid regex ({exc})") from exc
    error = raw.get("error")
    if error is not None and error not in ERRORS:
        raise errors.ConfigError(f"{where}: unknown error {error!r}; known: {', '.join(ERRORS)}")
    if "reply" not in raw and "data" not in raw and error is None:
        raise errors.ConfigError(f"{where}: give at least one of 'reply', 'data' or 'error'")
    data = raw.get("data", _json_or_none(raw.get("reply")))
    return Rule(pattern, raw.get("reply"), data, error, raw.get("latency"))


def load_rules(source: str | Path | Sequence[Any]) -> list[Rule]:
    """Rules from a JSON file path or an already-parsed list."""
    if isinstance(source, (str, Path)):
        path = Path(source)
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError as exc:
            raise errors.ConfigError(f"script file {path} does not exist") from exc
        except json.JSONDecodeError as exc:
            raise errors.ConfigError(
                f"script file {path} is not valid JSON: {exc.msg} at line {exc.lineno}"
            ) from exc
    else:
        raw = source
    if not isinstance(raw, list):
        raise errors.ConfigError('a script is a JSON list of rules like {"match": ..., "reply": ...}')
    return [rule_from(item, i) for i, item in enumerate(raw)]


def scripted_answer(rules: Sequence[Rule], request: Request) -> tuple[Answer, float | None]:
    """The first matching rule's answer and latency; the default answer when none match."""
    text = request.text
    for rule in rules:
        if rule.pattern.search(text):
            return rule.answer(request), rule.latency
    return default_answer(request), None


def default_answer(request: Request) -> Answer:
    if request.schema is not None:
        example: Answer = example_of(request.schema)
        return example
    last = request.messages[-1].content if request.messages else ""
    return "echo: " + " ".join(last.split())[:200]


def example_of(schema: Mapping[str, Any], root: Mapping[str, Any] | None = None) -> Any:
    """The simplest value that fits a schema: first enum value, zero, empty string."""
    root = root or schema
    if "$ref" in schema:
        node: Any = root
        for part in str(schema["$ref"]).removeprefix("#/").split("/"):
            node = node[part]
        return example_of(node, root)
    if "enum" in schema:
        return schema["enum"][0]
    if "anyOf" in schema:
        return example_of(schema["anyOf"][0], root)
    kind = schema.get("type", "object")
    kind = kind[0] if isinstance(kind, list) else kind
    if kind == "object":
        props = schema.get("properties", {})
        return {k: example_of(v, root) for k, v in props.items()}
    if kind == "array":
        return []
    return {
        "string": "",
        "integer": schema.get("minimum", 0),
        "number": schema.get("minimum", 0),
        "boolean": False,
        "null": None,
    }.get(kind, "")


def estimate_tokens(text: str) -> int:
    """About four characters a token: the fake's usage figures and the limiter's estimates."""
    return max(1, (len(text) + 3) // 4)


@dataclass
class FakeProvider:
    """A provider that answers from rules or a function, with optional latency and errors.

    ``error_rate`` maps error kinds (keys of ``ERRORS``) to the share of calls that fail
    that way, drawn from a seeded generator so runs repeat. ``calls`` records every
    request; ``max_in_flight`` and ``cancelled`` let tests see concurrency and cancellation.
    """

    model: str = "fake"
    rules: Sequence[Rule] | str | Path | None = None
    responder: Responder | None = None
    latency: float = 0.0
    error_rate: Mapping[str, float] = field(default_factory=dict)
    seed: int = 0
    price: Price | None = None
    name: str = "fake"
    capabilities: Capabilities = Capabilities(supports_schema=True, supports_cache=False)
    calls: list[Request] = field(default_factory=list, repr=False)
    in_flight: int = 0
    max_in_flight: int = 0
    cancelled: int = 0

    def __post_init__(self) -> None:
        rules = self.rules
        if isinstance(rules, (str, Path)) or (
            rules is not None and not all(isinstance(r, Rule) for r in rules)
        ):
            self.rules = load_rules(rules)  # a path, or rules in their JSON form
        for kind in self.error_rate:
            if kind not in ERRORS:
                raise errors.ConfigError(f"unknown error kind {kind!r}; known: {', '.join(ERRORS)}")
        self._random = random.Random(self.seed)

    async def complete(self, request: Request) -> Reply:
        self.calls.append(request)
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        started = time.perf_counter()
        try:
            answer, latency = await self._answer(request)
            await self._wait(latency if latency is not None else self.latency, request)
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        finally:
            self.in_flight -= 1
        return self._reply(request, answer, time.perf_counter() - started)

    async def _answer(self, request: Request) -> tuple[Answer, float | None]:
        injected = self._injected_error()
        if injected is not None:
            return injected, None
        if self.responder is not None:
            answer = self.responder(request)
            if isinstance(answer, Awaitable):
                answer = await answer
            return answer, None
        return scripted_answer(self.rules or [], request)  # type: ignore[arg-type]

    def _injected_error(self) -> Exception | None:
        roll = self._random.random()
        for kind, share in self.error_rate.items():
            if roll < share:
                return ERRORS[kind](f"injected {kind}")
            roll -= share
        return None

    async def _wait(self, latency: float, request: Request) -> None:
        if request.on_first_byte is None:
            if latency > 0:
                await asyncio.sleep(latency)
            return
        # The answer "starts" halfway: what a cache-aware fan-out waits for.
        if latency > 0:
            await asyncio.sleep(latency / 2)
        request.on_first_byte()
        if latency > 0:
            await asyncio.sleep(latency / 2)

    def _reply(self, request: Request, answer: Answer, latency: float) -> Reply:
        if isinstance(answer, Exception):
            raise answer
        if isinstance(answer, Reply):
            return answer
        text = answer if isinstance(answer, str) else json.dumps(answer)
        usage = Usage(estimate_tokens(request.text), estimate_tokens(text))
        data = None
        if request.schema is not None:
            try:
                data = self._structured(request.schema, answer, text)
            except errors.InvalidReply as exc:
                raise exc.billed(usage, self._cost(usage), text) from None
        return Reply(
            text=text,
            model=self.model,
            usage=usage,
            data=data,
            stop_reason="end_turn",
            latency_s=latency,
            cost=self._cost(usage),
        )

    def _structured(self, schema: Mapping[str, Any], answer: Answer, text: str) -> Any:
        data = answer if not isinstance(answer, str) else _json_or_none(answer)
        if data is None:
            raise errors.InvalidReply(f"fake answer is not JSON: {text[:80]!r}", provider="fake")
        return check(data, schema, where=f"fake/{self.model}")

    def _cost(self, usage: Usage) -> float | None:
        if self.price is None:
            return cost_of(self.model, usage)
        p = self.price
        return (usage.input_tokens * p.input + usage.output_tokens * p.output) / 1_000_000


def _json_or_none(text: Any) -> Any:
    if not isinstance(text, str):
        return None
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        return None
    return value if isinstance(value, (dict, list)) else None
