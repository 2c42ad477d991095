"""OpenAI Chat Completions (``POST /v1/chat/completions``), as the official SDK expects it.

Parses messages (system, developer, user, assistant; string or text-part content),
max_tokens or max_completion_tokens, temperature, stop, stream (with
``stream_options.include_usage``) and ``response_format`` (``json_schema`` or
``json_object``); answers with a ``chat.completion`` or its chunk stream, and fails with
OpenAI's error bodies and ``x-ratelimit-*`` headers.

Prompt caching is automatic at OpenAI: a prompt's leading system messages are treated
as its cacheable prefix when they reach OpenAI's minimum of 1024 tokens; reads appear
as ``prompt_tokens_details.cached_tokens``.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Mapping
from typing import Any

from quorum.llm.fake import estimate_tokens
from quorum.llm.types import Message, Request, Usage
from quorum.testing._cache import CachePlan, Prefix
from quorum.testing._limits import BucketState
from quorum.testing._wire import Call, Content, WireError

OPENAI_CACHE_MIN_TOKENS = 1024
DEFAULT_MAX_TOKENS = 16_384  # no limit given: the model's own output cap applies
_SYSTEM_ROLES = ("system", "developer")
_ERRORS = {
    400: ("invalid_request_error", None),
    401: ("invalid_request_error", "invalid_api_key"),
    403: ("invalid_request_error", "permission_denied"),
    404: ("invalid_request_error", "model_not_found"),
    429: ("requests", "rate_limit_exceeded"),
}
_FINISH = {"end_turn": "stop", "stop_sequence": "stop", "max_tokens": "length"}


class OpenAIApi:
    path = "/v1/chat/completions"
    request_id_header = "x-request-id"

    def authorized(self, headers: Mapping[str, str]) -> bool:
        return bool(headers.get("authorization", "").removeprefix("Bearer ").strip())

    def parse(self, body: Any, headers: Mapping[str, str]) -> Call:
        if not isinstance(body, dict):
            raise WireError(400, "the request body must be a JSON object")
        model = body.get("model")
        if not isinstance(model, str) or not model:
            raise WireError(400, "you must provide a model parameter")
        raw_messages = body.get("messages")
        if not isinstance(raw_messages, list) or not raw_messages:
            raise WireError(400, "'messages' must be a non-empty array")
        system, messages = _split(raw_messages)
        name, schema = _response_format(body.get("response_format"))
        request = Request(
            messages=messages,
            system=system or None,
            max_tokens=_max_tokens(body),
            temperature=_temperature(body.get("temperature")),
            schema=schema,
            schema_name=name or "answer",
            stop=_stops(body.get("stop")),
        )
        options = body.get("stream_options") or {}
        return Call(
            request,
            model,
            bool(body.get("stream")),
            name,
            _prefix(system, model),
            include_usage=bool(isinstance(options, dict) and options.get("include_usage")),
        )

    def usage(self, call: Call, content: Content, plan: CachePlan) -> Usage:
        # OpenAI reports the whole prompt in prompt_tokens; cached reads are a part of it.
        return Usage(
            input_tokens=call.input_tokens - plan.read_tokens,
            output_tokens=content.output_tokens,
            cache_read_tokens=plan.read_tokens,
        )

    def message(self, call: Call, content: Content, usage: Usage, ident: str) -> bytes:
        choice = {
            "index": 0,
            "message": {"role": "assistant", "content": content.text, "refusal": None, "annotations": []},
            "logprobs": None,
            "finish_reason": _FINISH[content.stop_reason],
        }
        completion = _envelope(call, ident, "chat.completion")
        completion.update(choices=[choice], usage=_usage(usage))
        return json.dumps(completion).encode()

    def events(self, call: Call, content: Content, usage: Usage, ident: str) -> tuple[bytes, bytes]:
        """The chunk stream in two parts: the first chunk (the role), and the rest."""
        first = _chunk(call, ident, {"role": "assistant", "content": ""}, None)
        rest = b"".join(_chunk(call, ident, {"content": piece}, None) for piece in _pieces(content.text))
        rest += _chunk(call, ident, {}, _FINISH[content.stop_reason])
        if call.include_usage:
            final = _envelope(call, ident, "chat.completion.chunk")
            final.update(choices=[], usage=_usage(usage))
            rest += _data(final)
        return first, rest + b"data: [DONE]\n\n"

    def error(self, status: int, message: str) -> bytes:
        kind, code = _ERRORS.get(status, ("server_error" if status >= 500 else "invalid_request_error", None))
        body = {"error": {"message": message, "type": kind, "param": None, "code": code}}
        return json.dumps(body).encode()

    def malformed(self, stream: bool) -> bytes:
        if stream:
            return b'data: {"id": "chatcmpl-broken", "object": "chat.completion.chunk", "cho\n\n'
        return b'{"id": "chatcmpl-broken", "object": "chat.completion", "choices": [{"ind'

    def limit_headers(self, states: Mapping[str, BucketState]) -> list[tuple[str, str]]:
        headers = []
        for name, state in states.items():
            unit = "requests" if name == "requests" else "tokens"
            headers += [
                (f"x-ratelimit-limit-{unit}", str(state.limit)),
                (f"x-ratelimit-remaining-{unit}", str(max(0, state.remaining))),
                (f"x-ratelimit-reset-{unit}", duration(state.reset_s)),
            ]
        return headers


def duration(seconds: float) -> str:
    """OpenAI's duration format: ``20ms``, ``1.5s``, ``6m0s``."""
    if seconds < 1:
        return f"{round(seconds * 1000)}ms"
    minutes, rest = divmod(round(seconds, 3), 60)
    return f"{int(minutes)}m{rest:g}s" if minutes else f"{rest:g}s"


def _envelope(call: Call, ident: str, kind: str) -> dict[str, Any]:
    return {
        "id": "chatcmpl-" + ident,
        "object": kind,
        "created": int(time.time()),
        "model": call.model,
        "system_fingerprint": "fp_quorum_emulator",
        "service_tier": "default",
    }


def _chunk(call: Call, ident: str, delta: dict[str, Any], finish: str | None) -> bytes:
    chunk = _envelope(call, ident, "chat.completion.chunk")
    chunk["choices"] = [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]
    return _data(chunk)


def _data(payload: Mapping[str, Any]) -> bytes:
    return b"data: " + json.dumps(payload).encode() + b"\n\n"


def _pieces(text: str, size: int = 64) -> list[str]:
    return [text[i : i + size] for i in range(0, len(text), size)]


def _usage(usage: Usage) -> dict[str, Any]:
    prompt = usage.input_tokens + usage.cache_read_tokens
    return {
        "prompt_tokens": prompt,
        "completion_tokens": usage.output_tokens,
        "total_tokens": prompt + usage.output_tokens,
        "prompt_tokens_details": {"cached_tokens": usage.cache_read_tokens, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": 0,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    }


# --- parsing ------------------------------------------------------------------------


def _split(raw: list[Any]) -> tuple[str, tuple[Message, ...]]:
    """System text (the leading system/developer messages) and the conversation."""
    system: list[str] = []
    messages: list[Message] = []
    for i, item in enumerate(raw):
        if not isinstance(item, dict):
            raise WireError(400, f"messages[{i}] must be an object with 'role' and 'content'")
        role, text = item.get("role"), _text(item.get("content"), i)
        if role in _SYSTEM_ROLES:
            system.append(text)
        elif role in ("user", "tool"):
            messages.append(Message("user", text))
        elif role == "assistant":
            messages.append(Message("assistant", text))
        else:
            raise WireError(400, f"messages[{i}].role: unknown role {role!r}")
    return "\n".join(system), tuple(messages)


def _text(content: Any, index: int) -> str:
    if content is None or isinstance(content, str):
        return content or ""
    if isinstance(content, list):
        parts = [p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text"]
        return "\n".join(str(p) for p in parts)
    raise WireError(400, f"messages[{index}].content must be a string or an array of parts")


def _response_format(fmt: Any) -> tuple[str | None, dict[str, Any] | None]:
    if not isinstance(fmt, dict) or fmt.get("type") in (None, "text"):
        return None, None
    if fmt.get("type") == "json_object":
        return "json_object", {"type": "object"}
    spec = fmt.get("json_schema")
    if fmt.get("type") != "json_schema" or not isinstance(spec, dict):
        raise WireError(400, "response_format: expected type 'text', 'json_object' or 'json_schema'")
    schema = spec.get("schema")
    if not isinstance(spec.get("name"), str) or not isinstance(schema, dict):
        raise WireError(400, "response_format.json_schema needs a 'name' and a 'schema' object")
    return str(spec["name"]), schema


def _max_tokens(body: Mapping[str, Any]) -> int:
    value = body.get("max_completion_tokens", body.get("max_tokens"))
    if value is None:
        return DEFAULT_MAX_TOKENS
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise WireError(400, f"max_tokens: expected a positive integer, got {value!r}")
    return value


def _temperature(value: Any) -> float | None:
    if value is None:
        return None
    if not isinstance(value, (int, float)) or not 0.0 <= value <= 2.0:
        raise WireError(400, f"temperature: must be a number between 0 and 2, got {value!r}")
    return float(value)


def _stops(value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    return (value,) if isinstance(value, str) else tuple(str(v) for v in value)


def _prefix(system: str, model: str) -> tuple[Prefix, ...]:
    tokens = estimate_tokens(system) if system else 0
    if tokens < OPENAI_CACHE_MIN_TOKENS:
        return ()
    key = hashlib.sha256(f"{model}\n{system}".encode()).hexdigest()
    return (Prefix(key, tokens),)
