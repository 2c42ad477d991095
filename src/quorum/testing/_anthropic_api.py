"""The Anthropic Messages API (``POST /v1/messages``), as the official SDK expects it.

Parses model, max_tokens, messages (string or block content), system (string or text
blocks), temperature, stop_sequences, tools, tool_choice, stream and ``cache_control``
breakpoints; answers with a ``message`` object or its server-sent event stream, and
fails with Anthropic's error bodies and headers.

Since API version 2026-10-21 (what SDK 2.x sends in ``anthropic-version``) the sampling
parameters ``temperature``, ``top_p`` and ``top_k`` are refused with a 400, whatever their
value, as Anthropic does; older versions accept ``temperature`` between 0 and 1.

A forced tool (``tool_choice`` of type ``tool``, or ``any`` with a single tool) asks for
a structured answer: the scripted JSON object becomes the ``tool_use`` input. A script
that answers plain text instead yields a text block, as a model that ignored the tool
would, so clients can test that case too.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from quorum.llm.fake import estimate_tokens
from quorum.llm.types import Message, Request, Role, Usage
from quorum.testing._cache import CachePlan, Prefix
from quorum.testing._limits import BucketState
from quorum.testing._wire import Call, Content, WireError

ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    529: "overloaded_error",
}


class AnthropicApi:
    path = "/v1/messages"
    request_id_header = "request-id"

    def authorized(self, headers: Mapping[str, str]) -> bool:
        bearer = headers.get("authorization", "").removeprefix("Bearer ").strip()
        return bool(headers.get("x-api-key", "").strip() or bearer)

    def parse(self, body: Any, headers: Mapping[str, str]) -> Call:
        body = _object(body, "the request body")
        _check_sampling(body, headers.get("anthropic-version", ""))
        model = _required(body, "model", str)
        max_tokens = _required(body, "max_tokens", int)
        if max_tokens < 1:
            raise WireError(400, "max_tokens: must be at least 1")
        messages = _required(body, "messages", list)
        if not messages:
            raise WireError(400, "messages: at least one message is required")
        tool, schema = _forced_tool(body)
        request = Request(
            messages=tuple(_message(m, i) for i, m in enumerate(messages)),
            system=_system_text(body.get("system")) or None,
            max_tokens=max_tokens,
            temperature=_temperature(body.get("temperature")),
            schema=schema,
            schema_name=tool or "answer",
            stop=tuple(str(s) for s in body.get("stop_sequences") or ()),
        )
        stream = bool(body.get("stream", False))
        return Call(request, model, stream, tool, _prefixes(body, model))

    def usage(self, call: Call, content: Content, plan: CachePlan) -> Usage:
        cached = plan.read_tokens + plan.write_tokens
        return Usage(
            input_tokens=max(0, call.input_tokens - cached),
            output_tokens=content.output_tokens,
            cache_read_tokens=plan.read_tokens,
            cache_write_tokens=plan.write_tokens,
        )

    def message(self, call: Call, content: Content, usage: Usage, ident: str) -> bytes:
        blocks, stop = _blocks(call, content, ident)
        message = _envelope(call, ident, usage)
        message.update(content=blocks, stop_reason=stop, stop_sequence=content.stop_sequence)
        return json.dumps(message).encode()

    def events(self, call: Call, content: Content, usage: Usage, ident: str) -> tuple[bytes, bytes]:
        """The stream in two parts: what is sent at the first byte, and the rest."""
        start = _envelope(call, ident, usage)
        start["usage"] = {**start["usage"], "output_tokens": 1}
        first = _sse("message_start", {"type": "message_start", "message": start})
        first += _sse("ping", {"type": "ping"})
        blocks, stop = _blocks(call, content, ident)
        rest = b"".join(_block_events(i, b, content) for i, b in enumerate(blocks))
        rest += _sse(
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": stop, "stop_sequence": content.stop_sequence},
                "usage": {"output_tokens": usage.output_tokens},
            },
        )
        rest += _sse("message_stop", {"type": "message_stop"})
        return first, rest

    def error(self, status: int, message: str) -> bytes:
        kind = ERROR_TYPES.get(status, "api_error" if status >= 500 else "invalid_request_error")
        return json.dumps({"type": "error", "error": {"type": kind, "message": message}}).encode()

    def malformed(self, stream: bool) -> bytes:
        if stream:
            return b'event: message_start\ndata: {"type": "message_start", "message": {"id": \n\n'
        return b'{"id": "msg_emu_broken", "type": "message", "content": [{"type": "te'

    def limit_headers(self, states: Mapping[str, BucketState]) -> list[tuple[str, str]]:
        now = datetime.now(UTC)
        headers = []
        for name, state in states.items():
            prefix = "anthropic-ratelimit-" + name.replace("_", "-")
            reset = (now + timedelta(seconds=state.reset_s)).isoformat(timespec="seconds")
            headers += [
                (prefix + "-limit", str(state.limit)),
                (prefix + "-remaining", str(max(0, state.remaining))),
                (prefix + "-reset", reset.replace("+00:00", "Z")),
            ]
        return headers


def _envelope(call: Call, ident: str, usage: Usage) -> dict[str, Any]:
    return {
        "id": "msg_" + ident,
        "type": "message",
        "role": "assistant",
        "model": call.model,
        "content": [],
        "stop_reason": None,
        "stop_sequence": None,
        "usage": {
            "input_tokens": usage.input_tokens,
            "output_tokens": usage.output_tokens,
            "cache_creation_input_tokens": usage.cache_write_tokens,
            "cache_read_input_tokens": usage.cache_read_tokens,
            "service_tier": "standard",
        },
    }


def _blocks(call: Call, content: Content, ident: str) -> tuple[list[dict[str, Any]], str]:
    if call.tool is not None and (content.data is not None or content.stop_reason == "max_tokens"):
        # A cut-off tool call still arrives as a tool_use block; its input is incomplete.
        use = {
            "type": "tool_use",
            "id": "toolu_" + ident,
            "name": call.tool,
            "input": content.data if content.data is not None else {},
        }
        return [use], "tool_use" if content.stop_reason != "max_tokens" else "max_tokens"
    return [{"type": "text", "text": content.text}], content.stop_reason


def _block_events(index: int, block: dict[str, Any], content: Content) -> bytes:
    if block["type"] == "tool_use":
        start = {**block, "input": {}}
        delta_type, key = "input_json_delta", "partial_json"
    else:
        start = {"type": "text", "text": ""}
        delta_type, key = "text_delta", "text"
    out = _sse("content_block_start", {"type": "content_block_start", "index": index, "content_block": start})
    for piece in _pieces(content.text):
        delta = {"type": delta_type, key: piece}
        out += _sse("content_block_delta", {"type": "content_block_delta", "index": index, "delta": delta})
    return out + _sse("content_block_stop", {"type": "content_block_stop", "index": index})


def _pieces(text: str, size: int = 64) -> list[str]:
    return [text[i : i + size] for i in range(0, len(text), size)] or [""]


def _sse(event: str, data: Mapping[str, Any]) -> bytes:
    return f"event: {event}\ndata: {json.dumps(data)}\n\n".encode()


# --- parsing ------------------------------------------------------------------------


def _object(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise WireError(400, f"{where}: expected a JSON object")
    return value


def _required(body: Mapping[str, Any], name: str, kind: type) -> Any:
    if name not in body:
        raise WireError(400, f"{name}: Field required")
    value = body[name]
    if not isinstance(value, kind) or isinstance(value, bool):
        raise WireError(400, f"{name}: expected {kind.__name__}, got {type(value).__name__}")
    return value


SAMPLING_REMOVED_IN = "2026-10-21"
_SAMPLING = ("temperature", "top_p", "top_k")


def _check_sampling(body: Mapping[str, Any], version: str) -> None:
    if version.strip() < SAMPLING_REMOVED_IN:
        return
    for name in _SAMPLING:
        if name in body:
            raise WireError(400, f"{name}: Extra inputs are not permitted")


def _temperature(value: Any) -> float | None:
    if value is None:
        return None
    if not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
        raise WireError(400, f"temperature: must be a number between 0 and 1, got {value!r}")
    return float(value)


def _message(raw: Any, index: int) -> Message:
    raw = _object(raw, f"messages.{index}")
    role = raw.get("role")
    if role not in ("user", "assistant"):
        raise WireError(400, f"messages.{index}.role: expected 'user' or 'assistant', got {role!r}")
    checked: Role = role
    return Message(checked, _content_text(raw.get("content"), f"messages.{index}.content"))


def _content_text(content: Any, where: str) -> str:
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise WireError(400, f"{where}: expected a string or a list of content blocks")
    return "\n".join(t for t in (_block_text(b) for b in content) if t)


def _block_text(block: Any) -> str:
    if not isinstance(block, dict):
        return ""
    kind = block.get("type")
    if kind == "text":
        return str(block.get("text", ""))
    if kind == "tool_use":
        return json.dumps(block.get("input", {}))
    if kind == "tool_result":
        inner = block.get("content", "")
        return inner if isinstance(inner, str) else _content_text(inner, "tool_result.content")
    return ""


def _system_text(system: Any) -> str:
    if system is None or isinstance(system, str):
        return system or ""
    return _content_text(system, "system")


def _forced_tool(body: Mapping[str, Any]) -> tuple[str | None, dict[str, Any] | None]:
    tools = body.get("tools") or []
    choice = body.get("tool_choice") or {}
    kind = choice.get("type") if isinstance(choice, dict) else None
    if kind == "tool":
        name = choice.get("name")
    elif kind == "any" and len(tools) == 1:
        name = tools[0].get("name")
    else:
        return None, None
    for tool in tools:
        if isinstance(tool, dict) and tool.get("name") == name:
            schema = tool.get("input_schema")
            return str(name), schema if isinstance(schema, dict) else {"type": "object"}
    raise WireError(400, f"tool_choice: tool {name!r} is not among the request's tools")


def _prefixes(body: Mapping[str, Any], model: str) -> tuple[Prefix, ...]:
    """Cacheable prefixes, in prompt order: tools, then system blocks, then messages."""
    segments = _segments(body)
    if body.get("cache_control") and segments:
        # Automatic caching: one breakpoint on the last block of the prompt.
        segments[-1] = (segments[-1][0], segments[-1][1], True)
    if not any(marked for _, _, marked in segments):
        return ()
    digest = hashlib.sha256(model.encode())
    texts: list[str] = []
    prefixes = []
    for identity, text, marked in segments:
        digest.update(json.dumps(identity, sort_keys=True).encode())
        if text:
            texts.append(text)
        if marked:
            prefixes.append(Prefix(digest.copy().hexdigest(), estimate_tokens("\n".join(texts))))
    return tuple(prefixes)


Segment = tuple[Any, str, bool]  # (what makes it unique, its text, has a breakpoint)


def _segments(body: Mapping[str, Any]) -> list[Segment]:
    out: list[Segment] = []
    for tool in body.get("tools") or []:
        out.append((["tool", _unmarked(tool)], "", _marked(tool)))
    system = body.get("system")
    if isinstance(system, str):
        out.append((["system", system], system, False))
    elif isinstance(system, list):
        out += [(["system", _unmarked(b)], _block_text(b), _marked(b)) for b in system]
    for message in body.get("messages") or []:
        content = message.get("content") if isinstance(message, dict) else None
        role = message.get("role") if isinstance(message, dict) else None
        if isinstance(content, str):
            out.append(([role, content], content, False))
        elif isinstance(content, list):
            out += [([role, _unmarked(b)], _block_text(b), _marked(b)) for b in content]
    return out


def _marked(block: Any) -> bool:
    return isinstance(block, dict) and bool(block.get("cache_control"))


def _unmarked(block: Any) -> Any:
    if isinstance(block, dict):
        return {k: v for k, v in block.items() if k != "cache_control"}
    return block
