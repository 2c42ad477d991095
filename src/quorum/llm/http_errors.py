"""One translation from HTTP SDK exceptions to quorum's error tree, for every adapter.

The official ``anthropic`` and ``openai`` SDKs raise parallel hierarchies (a status
error with ``status_code`` and ``response``, a connection error, a timeout that
subclasses it, a response-validation error). Each adapter describes its SDK's classes in
an ``SdkErrors`` and maps through one ``Boundary``, so both providers fail the same way::

    429                        RateLimited (retry_after from retry-after-ms / retry-after)
    529                        Overloaded
    408, 409, 5xx              ServerError
    400, 413, 422, other 4xx   BadRequest (ContextOverflow when the prompt is too long)
    401, 403                   AuthError
    404                        NotFound
    timeout                    Timeout
    refused, reset, DNS        ConnectionFailed
    body that does not parse, or is not the API's shape
                               MalformedReply (transient: garbled on the way)

Every mapped error carries ``status``, ``provider`` and the parsed rate-limit headers,
and its message is one line, names the provider, the status and the API's own message,
says what to do, and passes through ``redact`` so no key can leak into it.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

import httpx2

from quorum import errors
from quorum.llm.ratelimits import RateLimitInfo, parse_headers
from quorum.llm.secrets import redact

T = TypeVar("T")


def log_wire(log: logging.Logger, what: str, render: Callable[[], str]) -> None:
    """Log what crossed the wire at debug level, keys redacted; ``render`` runs only then
    (serialising every request and reply costs about 45 µs a call)."""
    if log.isEnabledFor(logging.DEBUG):
        log.debug("%s: %s", what, redact(render()))


_MAX_MESSAGE = 300
# Error types an API may send inside a 200 stream (an `error` event) and their statuses.
_STATUS_OF_TYPE = {
    "overloaded_error": 529,
    "rate_limit_error": 429,
    "api_error": 500,
    "invalid_request_error": 400,
    "authentication_error": 401,
    "permission_error": 403,
    "not_found_error": 404,
    "request_too_large": 413,
}
_CONTEXT_SIGNS = ("prompt is too long", "context_length_exceeded", "maximum context length")


@dataclass(frozen=True, slots=True)
class SdkErrors:
    """The exception classes of one SDK; both official SDKs have this shape."""

    status: type[Exception]  # APIStatusError: .status_code, .response, .body
    timeout: type[Exception]  # APITimeoutError (checked before connection: it subclasses it)
    connection: type[Exception]  # APIConnectionError
    validation: type[Exception]  # APIResponseValidationError


@dataclass(frozen=True, slots=True)
class Boundary:
    """Where one adapter meets its SDK: who is calling, and what to tell the user."""

    provider: str
    sdk: SdkErrors
    key_env: str
    base_url: str
    timeout: float

    async def guard(self, call: Awaitable[T]) -> T:
        """Await an SDK call; its exceptions leave as quorum's (``raise ... from``)."""
        try:
            return await call
        except Exception as exc:
            mapped = self.map(exc)
            if mapped is None:
                raise
            raise mapped from exc

    async def each(self, stream: AsyncIterable[T]) -> AsyncIterator[T]:
        """The items of an SDK stream, each read through ``guard``."""
        reading = aiter(stream)
        while True:
            try:
                item = await self.guard(anext(reading))
            except StopAsyncIteration:
                return
            yield item

    def map(self, exc: Exception) -> errors.ProviderError | None:
        """The quorum error for an SDK or transport exception; ``None`` if it is not one."""
        if isinstance(exc, (self.sdk.timeout, httpx2.TimeoutException)):
            return errors.Timeout(
                self._line(f"no answer within {self.timeout:g} s (raise timeout= for long answers)"),
                provider=self.provider,
            )
        if isinstance(exc, (self.sdk.connection, httpx2.TransportError)):
            return errors.ConnectionFailed(
                self._line(
                    f"the connection to {self.base_url} failed or broke before an answer "
                    f"({_cause(exc)}); check the base URL and the network"
                ),
                provider=self.provider,
            )
        if isinstance(exc, (self.sdk.validation, json.JSONDecodeError)):
            status = getattr(exc, "status_code", None)
            # The API's own envelope is broken, not the model's answer: a transport fault,
            # retried. A model answer that breaks the schema is InvalidReply, elsewhere.
            return errors.MalformedReply(
                self._line(
                    f"answered{_status_text(status)} with a body that is not the expected JSON "
                    f"({_clip(str(exc))})"
                ),
                status=status,
                provider=self.provider,
                rate_limits=_limits_of(exc),
            )
        if isinstance(exc, self.sdk.status):
            return self._from_status(exc)
        return None

    def _from_status(self, exc: Exception) -> errors.ProviderError:
        body = getattr(exc, "body", None)
        kind, message = _error_fields(exc, body)
        status = int(getattr(exc, "status_code", 0) or 0)
        if status < 400:
            status = _STATUS_OF_TYPE.get(kind or "", 500)  # an error event inside a stream
        limits = _limits_of(exc)
        detail = f"{message} ({kind})" if kind else message
        text = self._line(f"answered HTTP {status}: {detail}{self._advice(status, limits)}")
        cls = _class_for(status, f"{kind} {message}".lower())
        if cls is errors.RateLimited:
            return errors.RateLimited(
                text,
                retry_after=limits.retry_after,
                status=status,
                provider=self.provider,
                rate_limits=limits,
            )
        return cls(text, status=status, provider=self.provider, rate_limits=limits)

    def _advice(self, status: int, limits: RateLimitInfo) -> str:
        if status == 429 and limits.retry_after is not None:
            return f"; retry after {limits.retry_after:g} s"
        if status in (401, 403):
            return f"; check {self.key_env} (is the key valid for {self.base_url}?)"
        if status == 404:
            return "; check the model name and the base URL"
        return ""

    def _line(self, text: str) -> str:
        return redact(" ".join(f"{self.provider}: {text}".split()))


def _class_for(status: int, words: str) -> type[errors.ProviderError]:
    if status == 429:
        return errors.RateLimited
    if status == 529:
        return errors.Overloaded
    if status in (408, 409) or status >= 500:
        return errors.ServerError
    if status in (401, 403):
        return errors.AuthError
    if status == 404:
        return errors.NotFound
    if any(sign in words for sign in _CONTEXT_SIGNS):
        return errors.ContextOverflow
    return errors.BadRequest


def _error_fields(exc: Exception, body: Any) -> tuple[str | None, str]:
    """The API's error type and message, from Anthropic's or OpenAI's error body."""
    inner = body.get("error", body) if isinstance(body, Mapping) else None
    kind = inner.get("type") if isinstance(inner, Mapping) else None
    message = getattr(exc, "api_message", None)
    if not message and isinstance(inner, Mapping):
        message = inner.get("message")
    if not message:
        message = body if isinstance(body, str) and body.strip() else getattr(exc, "message", "")
    return (str(kind) if kind else None), _clip(str(message) or "no message")


def _limits_of(exc: Exception) -> RateLimitInfo:
    response = getattr(exc, "response", None)
    headers = getattr(response, "headers", None)
    if not isinstance(headers, Mapping):
        return RateLimitInfo()
    return parse_headers(headers)


def _cause(exc: BaseException) -> str:
    root = exc.__cause__ or exc.__context__ or exc
    text = str(root).strip()
    name = type(root).__name__
    return _clip(f"{name}: {text}" if text else name, 120)


def _status_text(status: int | None) -> str:
    return f" HTTP {status}" if status else ""


def _clip(text: str, limit: int = _MAX_MESSAGE) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def item_error(provider: str, status: int | None, kind: str | None, message: str) -> errors.ProviderError:
    """The quorum error for a failure reported inside a body (a batch item's result), by the
    same rules as an HTTP error: the status, else the API's error type, picks the class."""
    code = status or _STATUS_OF_TYPE.get(kind or "", 500)
    detail = f"{message} ({kind})" if kind else message
    cls = _class_for(code, f"{kind} {message}".lower())
    text = redact(" ".join(f"{provider}: batch item answered HTTP {code}: {_clip(detail)}".split()))
    return cls(text, status=code, provider=provider)
