"""The OpenAI provider: Chat Completions through the official ``openai`` SDK.

The same adapter serves OpenAI and every server that speaks its API (vLLM, Ollama,
llama.cpp's server, LM Studio): give ``base_url`` or set ``OPENAI_BASE_URL``. Local
servers need no key, so one is only required when the base URL is OpenAI's own.

Structured answers use ``response_format`` with a strict ``json_schema``; the content is
parsed and checked against the schema. Reasoning models (o1, o3, o4, gpt-5) take
``max_completion_tokens``, the others ``max_tokens``. OpenAI counts cached prompt tokens
inside ``prompt_tokens``; they are split out here as ``cache_read_tokens``, so
``input_tokens`` means the same as with Anthropic. ``on_first_byte`` switches to
streaming, to learn when the answer begins. The SDK's own retries are off.
"""

from __future__ import annotations

import json
import logging
import os
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, cast
from urllib.parse import urlparse

import openai
from openai.types import CompletionUsage
from openai.types.chat import ChatCompletion, ChatCompletionChunk

from quorum.errors import InvalidReply, MissingKey
from quorum.llm.http_errors import Boundary, SdkErrors, log_wire
from quorum.llm.pricing import cost_of
from quorum.llm.provider import Capabilities, refuse_unknown_options
from quorum.llm.ratelimits import parse_headers
from quorum.llm.schema import check, parse_json
from quorum.llm.secrets import Secret
from quorum.llm.types import Reply, Request, Usage

log = logging.getLogger(__name__)

DEFAULT_MODEL = "gpt-4o-mini"
DEFAULT_BASE_URL = "https://api.openai.com/v1"
KEY_ENV = "OPENAI_API_KEY"
BASE_URL_ENV = "OPENAI_BASE_URL"
LOCAL_PLACEHOLDER_KEY = "no-key-needed"  # local servers ignore the key, the SDK wants one
_OPTIONS = ("model", "api_key", "base_url", "timeout")
_REASONING = re.compile(r"^(o1|o3|o4|gpt-5)(\b|-|$)")
_SDK_ERRORS = SdkErrors(
    status=openai.APIStatusError,
    timeout=openai.APITimeoutError,
    connection=openai.APIConnectionError,
    validation=openai.APIResponseValidationError,
)


@dataclass(frozen=True, slots=True)
class _Answer:
    """One completion's essentials, whether it came whole or streamed."""

    text: str | None
    refusal: str | None
    finish_reason: str | None
    model: str
    usage: Usage
    raw: Any


class OpenAIProvider:
    """Chat Completions through ``openai.AsyncOpenAI``; reads ``OPENAI_API_KEY`` and
    ``OPENAI_BASE_URL`` when ``api_key`` and ``base_url`` are not given."""

    name = "openai"
    capabilities = Capabilities(supports_schema=True, reuses_prefix=True)

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
        self._base_url = base_url or os.environ.get(BASE_URL_ENV) or DEFAULT_BASE_URL
        self._key = Secret(_key(api_key, self._base_url))
        self._client = openai.AsyncOpenAI(
            api_key=self._key.reveal(), base_url=self._base_url, timeout=timeout, max_retries=0
        )
        self._boundary = Boundary(self.name, _SDK_ERRORS, KEY_ENV, self._base_url, timeout)

    def __repr__(self) -> str:
        return f"OpenAIProvider(model={self.model!r}, base_url={self._base_url!r})"

    async def complete(self, request: Request) -> Reply:
        params = self._params(request)
        log_wire(log, "openai request", lambda: json.dumps(params))
        started = time.perf_counter()
        first_byte = request.on_first_byte
        call = self._create(params) if first_byte is None else self._stream(params, first_byte)
        answer, headers = await self._boundary.guard(call)
        log_wire(log, "openai reply", lambda: repr(answer.raw))
        return self._reply(request, answer, headers, time.perf_counter() - started)

    async def aclose(self) -> None:
        await self._client.close()

    # --- the request ------------------------------------------------------------------

    def _params(self, request: Request) -> dict[str, Any]:
        # The shared prefix leads the system message: OpenAI caches long common prefixes.
        system = request.full_system
        messages = [{"role": "system", "content": system}] if system else []
        messages += [{"role": m.role, "content": m.content} for m in request.messages]
        budget = "max_completion_tokens" if _REASONING.match(self.model) else "max_tokens"
        params: dict[str, Any] = {"model": self.model, "messages": messages, budget: request.max_tokens}
        if request.temperature is not None:
            params["temperature"] = request.temperature
        if request.stop:
            params["stop"] = list(request.stop)
        if request.seed is not None:
            params["seed"] = request.seed
        if request.schema is not None:
            params["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": request.schema_name, "schema": dict(request.schema), "strict": True},
            }
        return params

    async def _create(self, params: dict[str, Any]) -> tuple[_Answer, Mapping[str, str]]:
        raw = await self._client.chat.completions.with_raw_response.create(**params)
        # openai's raw response parses synchronously (anthropic's is a coroutine).
        completion = cast(ChatCompletion, raw.parse())
        return self._answer(completion), raw.headers

    def _answer(self, completion: ChatCompletion) -> _Answer:
        """A whole completion's essentials (shared with the batch adapter's results)."""
        if not completion.choices:
            raise InvalidReply(
                f"openai/{self.model} answered a completion with no choices", provider=self.name
            )
        choice = completion.choices[0]
        return _Answer(
            choice.message.content,
            choice.message.refusal,
            choice.finish_reason,
            completion.model,
            _usage(completion.usage),
            completion,
        )

    async def _stream(
        self, params: dict[str, Any], on_first_byte: Callable[[], None]
    ) -> tuple[_Answer, Mapping[str, str]]:
        params = {**params, "stream": True, "stream_options": {"include_usage": True}}
        raw = await self._client.chat.completions.with_raw_response.create(**params)
        parts: list[str] = []
        refusal: list[str] = []
        finish, model, usage, first = None, self.model, Usage(), True
        async for chunk in cast(openai.AsyncStream[ChatCompletionChunk], raw.parse()):
            if first:
                first = False
                on_first_byte()
            model = chunk.model or model
            usage = _usage(chunk.usage) if chunk.usage is not None else usage
            for choice in chunk.choices[:1]:
                parts.append(choice.delta.content or "")
                refusal.append(choice.delta.refusal or "")
                finish = choice.finish_reason or finish
        answer = _Answer("".join(parts), "".join(refusal) or None, finish, model, usage, None)
        return answer, raw.headers

    # --- the reply --------------------------------------------------------------------

    def _reply(self, request: Request, answer: _Answer, headers: Mapping[str, str], latency: float) -> Reply:
        text = answer.text or ""
        data = None
        model = answer.model or self.model
        if request.schema is not None:
            try:
                data = self._structured(request, request.schema, answer)
            except InvalidReply as exc:
                raise exc.billed(answer.usage, cost_of(model, answer.usage), text) from None
        return Reply(
            text=text,
            model=model,
            usage=answer.usage,
            data=data,
            stop_reason=answer.finish_reason,
            latency_s=latency,
            cost=cost_of(model, answer.usage),
            rate_limits=parse_headers(headers),
            raw=answer.raw,
        )

    def _structured(self, request: Request, schema: Mapping[str, Any], answer: _Answer) -> Any:
        where = f"openai/{self.model}"
        text = answer.text or ""
        if answer.finish_reason == "length":
            raise InvalidReply(
                f"{where}: the structured answer was cut off at max_tokens={request.max_tokens}; "
                "raise max_tokens or ask for a shorter answer",
                provider=self.name,
                text=text,
            )
        if answer.refusal:
            raise InvalidReply(
                f"{where} refused: {answer.refusal[:200]}", provider=self.name, text=answer.refusal
            )
        try:
            return check(parse_json(text, where=where), schema, where=where)
        except InvalidReply as exc:
            exc.provider, exc.text = self.name, text
            raise


def _key(api_key: str | None, base_url: str) -> str:
    key = (api_key if api_key is not None else os.environ.get(KEY_ENV, "")).strip()
    if key:
        return key
    if not _is_openai(base_url):
        return LOCAL_PLACEHOLDER_KEY
    raise MissingKey(
        f"{KEY_ENV} is not set: export {KEY_ENV}=... (a key from platform.openai.com), "
        f"or set {BASE_URL_ENV} to a local server (vLLM, Ollama, llama.cpp), "
        "or use --model local, which needs no key"
    )


def _is_openai(base_url: str) -> bool:
    host = urlparse(base_url).hostname or ""
    return host == "openai.com" or host.endswith(".openai.com")


def _usage(usage: CompletionUsage | None) -> Usage:
    if usage is None:
        return Usage()
    details = usage.prompt_tokens_details
    cached = (details.cached_tokens or 0) if details is not None else 0
    return Usage(
        input_tokens=usage.prompt_tokens - cached,
        output_tokens=usage.completion_tokens,
        cache_read_tokens=cached,
    )
