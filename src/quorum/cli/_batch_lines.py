"""The lines ``quorum batch`` reads: three formats, each turned into one ``Request``.

* OpenAI Batch: ``{"custom_id", "method": "POST", "url": "/v1/chat/completions", "body"}``
  with ``body`` a Chat Completions request (``model``, ``messages``, ``max_tokens`` or
  ``max_completion_tokens``, ``temperature``, ``seed``, ``stop``, ``response_format``
  of type ``json_schema``).
* Anthropic Message Batches: ``{"custom_id", "params"}`` with ``params`` a Messages
  request (``model``, ``max_tokens``, ``messages``, ``system``, ``temperature``,
  ``stop_sequences``, one ``tools`` entry forced by ``tool_choice``: a structured answer).
* Simple: ``{"id", "prompt", "system", "max_tokens", "schema", "model", "temperature"}``.

A field quorum cannot honour is an error for that line, never silently dropped. A line
that cannot be read becomes an item that carries its error, so the job writes an error
result for it and goes on.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from quorum.llm.types import Message, Request

OPENAI_BODY = {"model", "messages", "max_tokens", "max_completion_tokens", "temperature", "seed", "stop"}
OPENAI_BODY_ALL = OPENAI_BODY | {"response_format"}
ANTHROPIC_PARAMS = {
    "model",
    "max_tokens",
    "messages",
    "system",
    "temperature",
    "stop_sequences",
    "tools",
    "tool_choice",
}
SIMPLE = {"id", "prompt", "system", "max_tokens", "schema", "model", "temperature"}


class LineError(ValueError):
    """What is wrong with one input line."""


@dataclass(frozen=True, slots=True)
class Line:
    """One input line, read: its id, and either a request (and the model it names) or
    the reason it cannot run."""

    number: int
    id: str
    fingerprint: str
    request: Request | None = None
    provider: str | None = None  # "openai" or "anthropic" for the provider formats
    model: str | None = None
    error: str | None = None


def read_line(number: int, raw: bytes) -> Line | None:
    """The line numbered ``number`` (``None`` for a blank one)."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        return _broken(number, raw, f"not UTF-8 text ({exc.reason} at byte {exc.start})")
    if not text.strip():
        return None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        return _broken(number, raw, f"not JSON ({exc.msg} at column {exc.colno})")
    if not isinstance(data, dict):
        return _broken(number, raw, f"a JSON {type(data).__name__}, expected an object")
    fingerprint = _hash(json.dumps(data, sort_keys=True, ensure_ascii=False).encode())
    item_id = _id_of(data, number, fingerprint)
    try:
        provider, model, request = _request_of(data)
    except LineError as exc:
        return Line(number, item_id, fingerprint, error=f"line {number}: {exc}")
    return Line(number, item_id, fingerprint, request, provider, model)


def _broken(number: int, raw: bytes, why: str) -> Line:
    fingerprint = _hash(raw.rstrip(b"\r\n"))
    return Line(number, f"line-{number}-{fingerprint[:8]}", fingerprint, error=f"line {number}: {why}")


def _hash(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _id_of(data: Mapping[str, Any], number: int, fingerprint: str) -> str:
    for key in ("custom_id", "id"):
        value = data.get(key)
        if isinstance(value, (str, int)) and not isinstance(value, bool) and str(value):
            return str(value)
    return f"line-{number}-{fingerprint[:8]}"


def _request_of(data: Mapping[str, Any]) -> tuple[str | None, str | None, Request]:
    if "body" in data or "url" in data:
        return ("openai", *_openai(data))
    if "params" in data:
        return ("anthropic", *_anthropic(data))
    if "prompt" in data:
        return (None, *_simple(data))
    raise LineError(
        "not a request line: expected OpenAI Batch {custom_id, method, url, body}, Anthropic "
        "Message Batches {custom_id, params} or {id, prompt, ...}"
    )


# -- OpenAI Batch -------------------------------------------------------------------------


def _openai(line: Mapping[str, Any]) -> tuple[str | None, Request]:
    _only(line, {"custom_id", "method", "url", "body"}, "an OpenAI Batch line")
    if line.get("url") != "/v1/chat/completions" or line.get("method", "POST") != "POST":
        raise LineError(f"only POST /v1/chat/completions is supported, got {line.get('url')!r}")
    body = _mapping(line.get("body"), "body")
    _only(body, OPENAI_BODY_ALL, "body")
    system: list[str] = []
    messages: list[Message] = []
    for m in _list(body.get("messages"), "body.messages"):
        role, content = _role_content(m, "body.messages")
        if role in ("system", "developer"):
            system.append(content)
        else:
            messages.append(_message(role, content))
    options: dict[str, Any] = {}
    tokens = body.get("max_completion_tokens", body.get("max_tokens"))
    if tokens is not None:
        options["max_tokens"] = _count(tokens, "max_tokens")
    if "temperature" in body:
        options["temperature"] = _number(body["temperature"], "temperature")
    if "seed" in body:
        options["seed"] = _count(body["seed"], "seed")
    if "stop" in body:
        stop = body["stop"]
        options["stop"] = (stop,) if isinstance(stop, str) else tuple(_strings(stop, "stop"))
    if "response_format" in body:
        options["schema_name"], options["schema"] = _response_format(body["response_format"])
    return _model(body), _build(messages, "\n\n".join(system) or None, options)


def _response_format(value: Any) -> tuple[str, Mapping[str, Any]]:
    fmt = _mapping(value, "response_format")
    if fmt.get("type") != "json_schema":
        raise LineError(f"response_format {fmt.get('type')!r} is not supported; use json_schema")
    spec = _mapping(fmt.get("json_schema"), "response_format.json_schema")
    return str(spec.get("name", "answer")), _mapping(spec.get("schema"), "json_schema.schema")


# -- Anthropic Message Batches ------------------------------------------------------------


def _anthropic(line: Mapping[str, Any]) -> tuple[str | None, Request]:
    _only(line, {"custom_id", "params"}, "an Anthropic Message Batches line")
    params = _mapping(line.get("params"), "params")
    _only(params, ANTHROPIC_PARAMS, "params")
    messages = [
        _message(*_role_content(m, "params.messages")) for m in _list(params.get("messages"), "messages")
    ]
    system = params.get("system")
    options: dict[str, Any] = {}
    if "max_tokens" in params:
        options["max_tokens"] = _count(params["max_tokens"], "max_tokens")
    if "temperature" in params:
        options["temperature"] = _number(params["temperature"], "temperature")
    if "stop_sequences" in params:
        options["stop"] = tuple(_strings(params["stop_sequences"], "stop_sequences"))
    if "tools" in params or "tool_choice" in params:
        options["schema_name"], options["schema"] = _forced_tool(params)
    text = _text(system, "params.system") if system is not None else None
    return _model(params), _build(messages, text, options)


def _forced_tool(params: Mapping[str, Any]) -> tuple[str, Mapping[str, Any]]:
    tools = _list(params.get("tools"), "tools")
    choice = _mapping(params.get("tool_choice"), "tool_choice")
    if len(tools) != 1 or choice.get("type") != "tool":
        raise LineError(
            "tools are supported as one tool forced by tool_choice {type: tool, name} (a structured answer)"
        )
    tool = _mapping(tools[0], "tools[0]")
    if choice.get("name") != tool.get("name"):
        raise LineError("tool_choice must name the one tool given")
    return str(tool.get("name", "answer")), _mapping(tool.get("input_schema"), "tools[0].input_schema")


# -- the simple form ------------------------------------------------------------------------


def _simple(line: Mapping[str, Any]) -> tuple[str | None, Request]:
    _only(line, SIMPLE, "a simple line")
    prompt = line.get("prompt")
    if not isinstance(prompt, str) or not prompt:
        raise LineError("prompt must be a non-empty string")
    options: dict[str, Any] = {}
    if line.get("max_tokens") is not None:
        options["max_tokens"] = _count(line["max_tokens"], "max_tokens")
    if line.get("temperature") is not None:
        options["temperature"] = _number(line["temperature"], "temperature")
    if line.get("schema") is not None:
        options["schema"] = _mapping(line["schema"], "schema")
    system = line.get("system")
    if system is not None and not isinstance(system, str):
        raise LineError("system must be a string")
    return _model(line), _build([Message("user", prompt)], system, options)


# -- small readers -------------------------------------------------------------------------


def _build(messages: list[Message], system: str | None, options: dict[str, Any]) -> Request:
    if not messages or messages[-1].role != "user":
        raise LineError("messages must end with a user message")
    return Request(messages=tuple(messages), system=system, **options)


def _model(data: Mapping[str, Any]) -> str | None:
    model = data.get("model")
    if model is not None and (not isinstance(model, str) or not model):
        raise LineError("model must be a non-empty string")
    return model


def _only(data: Mapping[str, Any], allowed: set[str], where: str) -> None:
    unknown = sorted(set(data) - allowed)
    if unknown:
        raise LineError(f"{where} has field(s) quorum batch does not support: {', '.join(unknown)}")


def _mapping(value: Any, what: str) -> Mapping[str, Any]:
    if not isinstance(value, dict):
        raise LineError(f"{what} must be an object")
    return value


def _list(value: Any, what: str) -> list[Any]:
    if not isinstance(value, list) or not value:
        raise LineError(f"{what} must be a non-empty list")
    return value


def _strings(value: Any, what: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise LineError(f"{what} must be a list of strings")
    return value


def _count(value: Any, what: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise LineError(f"{what} must be a positive whole number, got {value!r}")
    return value


def _number(value: Any, what: str) -> float:
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        raise LineError(f"{what} must be a number, got {value!r}")
    return float(value)


def _role_content(message: Any, what: str) -> tuple[str, str]:
    m = _mapping(message, what)
    return str(m.get("role")), _text(m.get("content"), f"{what} content")


def _message(role: str, content: str) -> Message:
    if role not in ("user", "assistant"):
        raise LineError(f"message role {role!r} is not supported (user, assistant, system)")
    return Message(role, content)  # type: ignore[arg-type]


def _text(content: Any, what: str) -> str:
    """A string, or a list of text parts/blocks joined; anything else (images) is refused."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for part in content:
            if (
                not isinstance(part, dict)
                or part.get("type") != "text"
                or not isinstance(part.get("text"), str)
            ):
                raise LineError(f"{what}: only text parts are supported")
            parts.append(part["text"])
        return "\n".join(parts)
    raise LineError(f"{what} must be a string or a list of text parts")
