"""Every error quorum raises, in one tree.

Provider SDK exceptions are translated into this tree at the adapter boundary
(``raise ... from exc``), so callers never need to import an SDK to handle a failure,
and the retry layer decides from the class alone::

    QuorumError
    ├── ConfigError                 a user mistake: fix the call or the environment
    │   ├── MissingKey              an API key variable is not set
    │   ├── UnknownProvider         "provider/model" names no registered provider
    │   ├── LocalModelUnavailable   the `local` extra or its weights are missing
    │   └── MalformedInput          an input line that is not a text to judge
    ├── ProviderError               a call to a model failed
    │   ├── TransientError          worth retrying: the retry layer does
    │   │   ├── RateLimited         429, carries retry_after
    │   │   ├── Overloaded          529
    │   │   ├── ServerError         5xx, 408, 409
    │   │   ├── Timeout             no answer in time
    │   │   ├── ConnectionFailed    refused, reset, DNS
    │   │   └── MalformedReply      a body that does not parse: garbled on the way
    │   └── PermanentError          retrying cannot help
    │       ├── BadRequest          400, 413, 422
    │       │   └── ContextOverflow the prompt does not fit the model's context
    │       ├── AuthError           401, 403
    │       ├── NotFound            404
    │       ├── InvalidReply        a parsed answer that breaks the schema, or is cut off
    │       └── PoolClosed          the local model pool was closed
    ├── RequestTooLarge             one request is bigger than a whole rate-limit bucket
    ├── BudgetExceeded              a dollar or token cap was reached
    ├── TranslationError            every translator of a language failed
    └── RunFailed                   a run's failure policy gave up; carries the run's result
        ├── RunAborted              FAIL_FAST: the first failure stopped the run
        ├── IncompleteRun           REQUIRE_ALL: every failure listed
        └── QuorumNotReached        QUORUM(k): fewer than k tasks succeeded

Messages are written for the person who must act: what was wrong, what was
expected, what to do. They never contain an API key (see ``quorum.llm.secrets``).
"""

from __future__ import annotations

from typing import Any


class QuorumError(Exception):
    """Base of every error quorum raises on purpose.

    ``call_layer_done`` is set by a ``Connection`` on the error it finally raises: the one
    retry layer has already retried it as far as it should, so a task-level retry must not
    call again (retries would multiply)."""

    call_layer_done: bool = False


class ConfigError(QuorumError):
    """A user mistake in configuration, options or input: fix it and run again."""


class MissingKey(ConfigError):
    """An API key is needed and its environment variable is not set."""


class UnknownProvider(ConfigError):
    """A model string names a provider nobody registered."""


class LocalModelUnavailable(ConfigError):
    """The embedded model cannot run: the extra or the weights are missing."""


class MalformedInput(ConfigError):
    """An input line that is not a text to judge (bad JSON, no ``text``...)."""


class ProviderError(QuorumError):
    """A call to a model provider failed.

    ``status`` is the HTTP status when there was one; ``rate_limits`` holds what the
    provider's rate-limit headers said (a ``quorum.llm.ratelimits.RateLimitInfo``), so
    the limiter can learn from failures too.
    """

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        provider: str | None = None,
        rate_limits: Any = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.provider = provider
        self.rate_limits = rate_limits


class TransientError(ProviderError):
    """A failure that may pass: the retry layer tries again after a backoff."""


class RateLimited(TransientError):
    """HTTP 429. ``retry_after`` (seconds) is the provider's own advice, when given."""

    def __init__(self, message: str, *, retry_after: float | None = None, **kw: Any) -> None:
        super().__init__(message, **kw)
        self.retry_after = retry_after


class Overloaded(TransientError):
    """HTTP 529: the provider is overloaded right now."""


class ServerError(TransientError):
    """HTTP 5xx, 408 or 409 from the provider."""


class Timeout(TransientError):
    """The call did not finish within its time limit."""


class ConnectionFailed(TransientError):
    """The connection could not be made or broke before an answer came."""


class MalformedReply(TransientError):
    """A 200 whose body does not parse (broken JSON, a garbled stream): a fault on the
    way, not the model's answer, so it is retried like a reset. A body that parses but
    breaks the requested schema is ``InvalidReply``, which is final."""


class PermanentError(ProviderError):
    """A failure that the same request will meet again: never retried."""


class BadRequest(PermanentError):
    """HTTP 400, 413 or 422: the request itself is wrong."""


class ContextOverflow(BadRequest):
    """The prompt and the answer budget do not fit in the model's context window."""


class AuthError(PermanentError):
    """HTTP 401 or 403: the key is wrong, revoked or lacks permission."""


class NotFound(PermanentError):
    """HTTP 404: usually a model name the provider does not know."""


class InvalidReply(PermanentError):
    """The provider answered, but not with what was asked: garbage, a reply that breaks
    the requested schema, or an answer cut off by the token limit. ``text`` keeps what it
    did answer, so a caller can fall back to reading it as text."""

    def __init__(self, message: str, *, text: str | None = None, **kw: Any) -> None:
        super().__init__(message, **kw)
        self.text = text
        # The call was answered, so it was billed: adapters record what it used, and the
        # connection charges it to the task and the budget like any other call.
        self.usage: Any = None
        self.cost: float | None = None

    def billed(self, usage: Any, cost: float | None, text: str | None = None) -> InvalidReply:
        """Record what the answered call used (and what it said, if not yet known)."""
        self.usage, self.cost = usage, cost
        self.text = self.text if self.text is not None else text
        return self


class PoolClosed(PermanentError):
    """The local model pool was closed before or while a call ran."""


class RequestTooLarge(QuorumError):
    """One request needs more than a whole rate-limit bucket holds: it could never run."""


class BudgetExceeded(QuorumError):
    """A run's dollar or token cap has been reached; nothing more is dispatched."""


class TranslationError(QuorumError):
    """A language could not be translated: every translator failed."""


class RunFailed(QuorumError):
    """A run's failure policy gave up. ``result`` holds every outcome: nothing is lost."""

    def __init__(self, message: str, result: Any) -> None:
        super().__init__(message)
        self.result = result


class RunAborted(RunFailed):
    """FAIL_FAST: the first failure cancelled the calls in flight and skipped the rest."""


class IncompleteRun(RunFailed, RuntimeError):
    """REQUIRE_ALL: every task ran, and these failed. Also a ``RuntimeError``, which is
    what the chapter's ``parallel_with_policy`` raised."""


class QuorumNotReached(RunFailed):
    """QUORUM(k): every task finished and fewer than k succeeded."""


def describe(exc: BaseException) -> str:
    """``Type: message`` for any exception, never an empty string."""
    text = str(exc).strip()
    name = type(exc).__name__
    return f"{name}: {text}" if text else name
