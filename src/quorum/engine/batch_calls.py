"""An application's calls through a batch API: planned first, answered from the results.

An application such as a vote or a code review makes its calls deep inside its own code
(prompts, structured output, leaders of a cached prefix) and reads the answers there too.
To send those calls as one provider batch without copying any of it, the application runs
twice against stand-in providers:

1. against a ``CallPlanner``: every request it makes is kept under the custom_id that
   ``key(request)`` gives it, and the call fails at once (``CallPlanned``), so nothing is
   sent and nothing is billed;
2. the kept requests go through the batch driver (``quorum.engine.batches``);
3. against ``BatchAnswers``: every request is answered with the journaled result under its
   custom_id (the reply at the batch price, or the item's error), so the application
   parses, counts and aggregates exactly as it does online.

``key`` must give a request the same custom_id in both runs: applications build it from
what they put in a request's metadata or from the item and the voter, never from a
random part of the prompt.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import Any

from quorum import errors
from quorum.engine.connection import Connection
from quorum.engine.retry import Retry
from quorum.llm.provider import Capabilities, Provider
from quorum.llm.types import Reply, Request, Usage

Record = Mapping[str, Any]
Key = Callable[[Request], str]


class CallPlanned(errors.QuorumError):
    """A call kept for a batch instead of being sent (the planning run's every call)."""


class _StandIn:
    """A provider that looks like ``online`` (name, model, capabilities): the application
    builds the same requests for it as for the real model."""

    def __init__(self, online: Provider, key: Key) -> None:
        self._online, self._key = online, key

    @property
    def name(self) -> str:
        return self._online.name

    @property
    def model(self) -> str:
        return self._online.model

    @property
    def capabilities(self) -> Capabilities:
        return self._online.capabilities

    def connection(self) -> Connection:
        """This provider behind a connection that neither retries nor caches: a planned
        call or a journaled error is final, and a journaled answer is not a new call."""
        return Connection(self, retry=Retry(attempts=1), timeout=None)  # type: ignore[arg-type]


class CallPlanner(_StandIn):
    """Keeps every request under its custom_id (``requests``) and sends none."""

    def __init__(self, online: Provider, key: Key) -> None:
        super().__init__(online, key)
        self.requests: dict[str, Request] = {}

    async def complete(self, request: Request) -> Reply:
        custom_id = self._key(request)
        kept = replace(request, on_first_byte=None)  # a leader's hook means nothing in a batch
        if self.requests.setdefault(custom_id, kept) != kept:
            raise errors.ConfigError(f"two different requests have the custom_id {custom_id!r}")
        raise CallPlanned(f"{custom_id}: kept for a batch")


class BatchAnswers(_StandIn):
    """Answers each request with the batch result journaled under its custom_id."""

    def __init__(self, online: Provider, key: Key, results: Mapping[str, Record]) -> None:
        super().__init__(online, key)
        self._results = results

    async def complete(self, request: Request) -> Reply:
        custom_id = self._key(request)
        record = self._results.get(custom_id)
        if record is None:
            raise errors.PermanentError(
                f"no batch result for {custom_id}: the batches have not answered it yet; "
                "run the same command again to collect it",
                provider=self.name,
            )
        if record.get("status") == "ok":
            return reply_of(record, self.model)
        raise error_of(record, self.name)


def reply_of(record: Record, model: str) -> Reply:
    """A journaled answer as the ``Reply`` it was (billed at the batch price)."""
    usage = record.get("usage") or {}
    return Reply(
        text=str(record.get("text") or ""),
        model=str(record.get("model") or model),
        usage=Usage(int(usage.get("input_tokens", 0)), int(usage.get("output_tokens", 0))),
        data=record.get("data"),
        cost=record.get("cost"),
    )


def error_of(record: Record, provider: str) -> errors.ProviderError:
    """A journaled failure as a final error: an answer that broke its schema keeps its
    text (the application may read it as text, as online), anything else says why."""
    error = record.get("error")
    kind, message = (error.get("type"), error.get("message")) if isinstance(error, Mapping) else (None, error)
    if kind == "InvalidReply":
        invalid = errors.InvalidReply(str(message), text=record.get("text"), provider=provider)
        usage = record.get("usage") or {}
        used = Usage(int(usage.get("input_tokens", 0)), int(usage.get("output_tokens", 0)))
        return invalid.billed(used, record.get("cost"))
    known = getattr(errors, str(kind), None)
    if isinstance(known, type) and issubclass(known, errors.ProviderError):
        return known(str(message), provider=provider)  # final all the same: no retry replays it
    return errors.PermanentError(f"{kind or 'error'}: {message}", provider=provider)
