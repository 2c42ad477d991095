"""The Anthropic provider: the Messages API through the official ``anthropic`` SDK.

Structured answers use tool use: the request's schema becomes the ``input_schema`` of
one tool that the model is forced to call, and the tool's input is the answer, checked
against the schema. ``cache_prefix`` sends the system prompt as a text block marked
``cache_control: ephemeral``, so calls that share it read it from Anthropic's prompt
cache. ``on_first_byte`` switches to streaming, to learn when the answer begins (the
moment its cache entry exists). The SDK's own retries are off: quorum's engine is the
one retry layer.

Two request fields cannot be sent. Anthropic has no sampling seed, so ``Request.seed``
is dropped. And since API version 2026-10-21, which the SDK sends, the Messages API
refuses ``temperature`` (and ``top_p``, ``top_k``) with a 400 whatever its value, and the
SDK no longer has the parameter: ``Request.temperature`` is therefore not sent either, and
the first request that sets it logs a warning, so the loss is visible. Diversity among
Anthropic voters comes from their prompts.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable, Mapping
from typing import Any

import anthropic
from anthropic.types import Message as ApiMessage

from quorum.errors import InvalidReply, MissingKey
from quorum.llm.http_errors import Boundary, SdkErrors, log_wire
from quorum.llm.pricing import cost_of
from quorum.llm.provider import Capabilities, refuse_unknown_options
from quorum.llm.ratelimits import parse_headers
from quorum.llm.schema import check
from quorum.llm.secrets import Secret
from quorum.llm.types import Reply, Request, Usage

log = logging.getLogger(__name__)

DEFAULT_MODEL = "claude-sonnet-5-5"
DEFAULT_BASE_URL = "https://api.anthropic.com"
KEY_ENV = "ANTHROPIC_API_KEY"
BASE_URL_ENV = "ANTHROPIC_BASE_URL"
API_VERSION = "2026-10-21"  # what the anthropic SDK 2.x sends as anthropic-version
_OPTIONS = ("model", "api_key", "base_url", "timeout")
_SDK_ERRORS = SdkErrors(
    status=anthropic.APIStatusError,
    timeout=anthropic.APITimeoutError,
    connection=anthropic.APIConnectionError,
    validation=anthropic.APIResponseValidationError,
)


class AnthropicProvider:
    """Claude through ``anthropic.AsyncAnthropic``; reads ``ANTHROPIC_API_KEY`` and
    ``ANTHROPIC_BASE_URL`` when ``api_key`` and ``base_url`` are not given."""

    name = "anthropic"
    capabilities = Capabilities(supports_schema=True, supports_cache=True, max_context=200_000)

    def __init__(
        self,
        model: str = DEFAULT_MODEL,
        *,
        api_key: str | None = None,
        base_url: str | None = None,
        timeout: float = 600.0,
        **options: Any,
    ) -> None:
        refuse_unknown_options(self.name, options, _OPTIONS)
        self.model = model
        self._key = Secret(_key(api_key))
        self._base_url = base_url or os.environ.get(BASE_URL_ENV) or DEFAULT_BASE_URL
        self._client = anthropic.AsyncAnthropic(
            api_key=self._key.reveal(), base_url=self._base_url, timeout=timeout, max_retries=0
        )
        self._boundary = Boundary(self.name, _SDK_ERRORS, KEY_ENV, self._base_url, timeout)
        self._warned_temperature = False

    def __repr__(self) -> str:
        return f"AnthropicProvider(model={self.model!r}, base_url={self._base_url!r})"

    async def complete(self, request: Request) -> Reply:
        params = self._params(request)
        log_wire(log, "anthropic request", lambda: json.dumps(params))
        started = time.perf_counter()
        first_byte = request.on_first_byte
        call = self._create(params) if first_byte is None else self._stream(params, first_byte)
        message, headers = await self._boundary.guard(call)
        log_wire(log, "anthropic reply", message.model_dump_json)
        return self._reply(request, message, headers, time.perf_counter() - started)

    async def aclose(self) -> None:
        await self._client.close()

    # --- the request ------------------------------------------------------------------

    def _params(self, request: Request) -> dict[str, Any]:
        params: dict[str, Any] = {
            "model": self.model,
            "max_tokens": request.max_tokens,
            "messages": [{"role": m.role, "content": m.content} for m in request.messages],
        }
        system = _system(request)
        if system:
            params["system"] = system
        if request.temperature is not None:
            self._note_temperature(request.temperature)
        if request.stop:
            params["stop_sequences"] = list(request.stop)
        if request.schema is not None:
            params["tools"] = [_tool(request.schema_name, request.schema)]
            params["tool_choice"] = {"type": "tool", "name": request.schema_name}
        return params

    def _note_temperature(self, temperature: float) -> None:
        if not self._warned_temperature:
            self._warned_temperature = True
            # Debug level, once: the user cannot act on it, and the README says it.
            log.debug(
                "anthropic: temperature=%g is not sent: the Messages API (version %s) refuses "
                "sampling parameters; vary the prompts instead",
                temperature,
                API_VERSION,
            )

    async def _create(self, params: dict[str, Any]) -> tuple[ApiMessage, Mapping[str, str]]:
        raw = await self._client.messages.with_raw_response.create(**params)
        return await raw.parse(), raw.headers

    async def _stream(
        self, params: dict[str, Any], on_first_byte: Callable[[], None]
    ) -> tuple[ApiMessage, Mapping[str, str]]:
        async with self._client.messages.stream(**params) as stream:
            first = True
            async for _event in stream:
                if first:
                    first = False
                    on_first_byte()
            message = await stream.get_final_message()
            return message, stream.response.headers

    # --- the reply --------------------------------------------------------------------

    def _reply(
        self, request: Request, message: ApiMessage, headers: Mapping[str, str], latency: float
    ) -> Reply:
        usage = _usage(message)
        text = "".join(block.text for block in message.content if block.type == "text")
        data = None
        model = message.model or self.model
        if request.schema is not None:
            try:
                data = self._structured(request, request.schema, message, text)
            except InvalidReply as exc:
                raise exc.billed(usage, cost_of(model, usage), text) from None
            text = json.dumps(data)
        return Reply(
            text=text,
            model=model,
            usage=usage,
            data=data,
            stop_reason=message.stop_reason,
            latency_s=latency,
            cost=cost_of(model, usage),
            rate_limits=parse_headers(headers),
            raw=message,
        )

    def _structured(self, request: Request, schema: Mapping[str, Any], message: ApiMessage, text: str) -> Any:
        where = f"anthropic/{self.model}"
        if message.stop_reason == "max_tokens":
            raise InvalidReply(
                f"{where}: the structured answer was cut off at max_tokens={request.max_tokens}; "
                "raise max_tokens or ask for a shorter answer",
                provider=self.name,
                text=text,
            )
        tool = next(
            (b for b in message.content if b.type == "tool_use" and b.name == request.schema_name), None
        )
        if tool is None:
            said = " ".join(text.split())[:120]
            raise InvalidReply(
                f"{where} answered without calling the {request.schema_name!r} tool "
                f"(stop_reason {message.stop_reason}): {said!r}",
                provider=self.name,
                text=text,
            )
        try:
            return check(tool.input, schema, where=where)
        except InvalidReply as exc:
            exc.provider, exc.text = self.name, json.dumps(tool.input)
            raise


def _key(api_key: str | None) -> str:
    key = (api_key if api_key is not None else os.environ.get(KEY_ENV, "")).strip()
    if not key:
        raise MissingKey(
            f"{KEY_ENV} is not set: export {KEY_ENV}=... (a key from console.anthropic.com), "
            "or use --model local, which needs no key"
        )
    return key


def _system(request: Request) -> str | list[dict[str, Any]]:
    """The shared prefix and the system prompt, as text blocks when one must be marked.

    The prefix goes first so calls that differ only in their system prompt still share
    it; with ``cache_prefix`` the breakpoint goes on the prefix (or, without one, on the
    system prompt), making everything up to and including it cacheable.
    """
    if not request.prefix and not request.cache_prefix:
        return request.system or ""
    texts = [t for t in (request.prefix, request.system) if t]
    blocks: list[dict[str, Any]] = [{"type": "text", "text": t} for t in texts]
    if request.cache_prefix and blocks:
        blocks[0]["cache_control"] = {"type": "ephemeral"}
    return blocks


def _tool(name: str, schema: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "name": name,
        "description": f"Give your answer as the {name!r} object; its fields are the answer.",
        "input_schema": dict(schema),
    }


def _usage(message: ApiMessage) -> Usage:
    u = message.usage
    return Usage(
        input_tokens=u.input_tokens,
        output_tokens=u.output_tokens,
        cache_read_tokens=u.cache_read_input_tokens or 0,
        cache_write_tokens=u.cache_creation_input_tokens or 0,
    )
