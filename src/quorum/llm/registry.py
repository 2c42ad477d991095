"""From a model string to a provider.

Providers register under the entry-point group ``quorum.providers`` (the built-ins too,
in quorum's own ``pyproject.toml``); ``register_provider`` adds one at run time. A factory
is called as ``factory(model, **options)``.

Model strings: ``provider/model`` (``anthropic/claude-sonnet-5-5``, ``openai/gpt-4o-mini``),
a provider alone for its default model (``local``, ``fake``), ``local:/path/to/model.gguf``
for any GGUF file, and bare Claude names (``claude-sonnet-4-20250514``) for Anthropic.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from importlib import import_module
from importlib.metadata import entry_points
from typing import Any

from quorum.errors import ConfigError, UnknownProvider
from quorum.llm.provider import Provider

GROUP = "quorum.providers"
Factory = Callable[..., Provider]

# Used only when quorum runs from a source tree that was never installed, so that its
# entry points are missing; an installed quorum registers these through GROUP.
_BUILTIN = {
    "anthropic": "quorum.llm.anthropic:AnthropicProvider",
    "openai": "quorum.llm.openai:OpenAIProvider",
    "fake": "quorum.llm.fake:FakeProvider",
    "local": "quorum.llm.local:LocalProvider",
}
_runtime: dict[str, Factory] = {}

# The current Sonnet; claude-sonnet-4-5 reaches its end of life on 2026-11-30.
DEFAULT_ANTHROPIC = "anthropic/claude-sonnet-5-5"
_NAME = re.compile(r"^[a-z][a-z0-9_.-]*$")


def register_provider(name: str, factory: Factory) -> None:
    """Make ``name/...`` model strings resolve to ``factory`` in this process."""
    if not _NAME.match(name):
        raise ConfigError(f"provider name {name!r} must be lowercase letters, digits, '-', '_' or '.'")
    _runtime[name] = factory


def providers() -> dict[str, str]:
    """Every known provider name and where its factory lives."""
    found = {ep.name: ep.value for ep in entry_points(group=GROUP)}
    table = found or dict(_BUILTIN)
    table.update({name: f"{f.__module__}:{getattr(f, '__qualname__', f)}" for name, f in _runtime.items()})
    return dict(sorted(table.items()))


def parse_model(spec: str) -> tuple[str, str]:
    """``(provider, model)`` from a model string; model is "" for the provider's default."""
    text = spec.strip()
    if text.startswith("local:"):
        return "local", text.removeprefix("local:")
    if "/" in text:
        provider, model = text.split("/", 1)
        if not provider or not model or " " in text:
            raise ConfigError(_malformed(spec))
        return provider, model
    if text in providers():
        return text, ""
    if text.startswith("claude-"):
        return "anthropic", text
    raise ConfigError(_malformed(spec))


def resolve(spec: str, **options: Any) -> Provider:
    """The bare provider for a model string (no limits, no retry: see ``quorum.connect``)."""
    provider, model = parse_model(spec)
    factory = _factory(provider)
    return factory(model, **options) if model else factory(**options)


def default_model() -> tuple[str, str]:
    """The model to use when none is given, and why (for a line on stderr)."""
    chosen = os.environ.get("QUORUM_MODEL", "").strip()
    if chosen:
        return chosen, "QUORUM_MODEL is set"
    if os.environ.get("ANTHROPIC_API_KEY", "").strip():
        return DEFAULT_ANTHROPIC, "ANTHROPIC_API_KEY is set"
    return "local", "no API key is set, so the embedded model runs (tiny, for trying quorum out)"


def _factory(name: str) -> Factory:
    if name in _runtime:
        return _runtime[name]
    for ep in entry_points(group=GROUP, name=name):
        loaded: Factory = ep.load()
        return loaded
    if name in _BUILTIN and not list(entry_points(group=GROUP)):
        module, attr = _BUILTIN[name].split(":")
        builtin: Factory = getattr(import_module(module), attr)
        return builtin
    known = ", ".join(providers())
    raise UnknownProvider(
        f"unknown provider {name!r}; known providers: {known} (plugins register under '{GROUP}')"
    )


def _malformed(spec: str) -> str:
    known = ", ".join(providers())
    return (
        f"{spec!r} is not a model string: write provider/model, e.g. anthropic/claude-sonnet-5-5, "
        f"openai/gpt-4o-mini or local (providers: {known})"
    )
