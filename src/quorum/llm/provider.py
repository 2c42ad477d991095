"""The provider protocol: one async method. Capabilities are data, not subclasses."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from quorum.errors import ConfigError
from quorum.llm.types import Reply, Request


@dataclass(frozen=True, slots=True)
class Capabilities:
    supports_schema: bool = True  # native structured output (tool use, json_schema, grammar)
    supports_cache: bool = False  # explicit prompt-cache prefixes (Anthropic)
    # A prompt that starts like an earlier one costs less: llama.cpp keeps the evaluated
    # prefix of each instance's last prompt, OpenAI caches long prefixes by itself. Shared
    # context is then put first (``Request.prefix``), with no leader call needed.
    reuses_prefix: bool = False
    max_context: int | None = None  # tokens, prompt and answer together
    local: bool = False  # runs on this machine: no key, no network, no bill
    # Its free text (a finding's description, a fix) is worth showing to people. False for
    # a model too small to write it: applications then show only what a schema constrains.
    writes_prose: bool = True


@runtime_checkable
class Provider(Protocol):
    """Anything that turns a ``Request`` into a ``Reply``.

    ``name`` is the registry name ("anthropic"), ``model`` the model it calls. Errors
    must be raised as ``quorum.errors`` classes, mapped at the boundary. Providers that
    hold connections also offer ``async aclose()``.
    """

    @property
    def name(self) -> str: ...

    @property
    def model(self) -> str: ...

    @property
    def capabilities(self) -> Capabilities: ...

    async def complete(self, request: Request) -> Reply: ...


class Fronting:
    """A provider in front of another (``self.provider``: a connection, a cache): it
    answers to that provider's name, model and capabilities."""

    provider: Provider

    @property
    def name(self) -> str:
        return self.provider.name

    @property
    def model(self) -> str:
        return self.provider.model

    @property
    def capabilities(self) -> Capabilities:
        return self.provider.capabilities


def refuse_unknown_options(provider: str, unknown: Mapping[str, Any], allowed: Iterable[str]) -> None:
    """Unknown options raise, naming them and what is allowed: nothing is silently ignored."""
    if unknown:
        raise ConfigError(
            f"unknown option(s) {', '.join(sorted(unknown))} for the {provider} provider; "
            f"allowed: {', '.join(allowed)}"
        )
