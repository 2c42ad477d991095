"""Keeping API keys out of everything quorum writes.

Adapters hold keys in ``Secret`` (whose ``repr`` and ``str`` show only a mask) and register
every key they load. ``redact`` removes registered keys, key-shaped strings and auth
header values from any text before it reaches a log line, an exception or a report; in a
URL, the user information (``http://user:pass@host``) and every query value (``?key=...``)
are masked too, since a base URL can carry credentials.
"""

from __future__ import annotations

import re

_known: set[str] = set()

# Shapes of keys we never want to print even if nobody registered them.
_KEY_SHAPES = re.compile(
    r"(sk-ant-[A-Za-z0-9_\-]{8,}|sk-(?:proj-)?[A-Za-z0-9_\-]{16,})"
    r"|((?:x-api-key|authorization|api-key)\s*[:=]\s*)(?:Bearer\s+)?([^\s'\",}]+)",
    re.IGNORECASE,
)
MASK = "[REDACTED]"
_URL = re.compile(r"\b[a-z][a-z0-9+.\-]*://[^\s'\"<>]+", re.IGNORECASE)
_USERINFO = re.compile(r"^([a-z][a-z0-9+.\-]*://)[^/?#]*@", re.IGNORECASE)
_QUERY_VALUE = re.compile(r"([?&;][^=&#;]*=)[^&#;]*")


class Secret:
    """A value that never prints itself."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value
        remember(value)

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return f"Secret({MASK})"

    __str__ = __repr__

    def __bool__(self) -> bool:
        return bool(self._value)


def remember(value: str | None) -> None:
    """Register a secret so ``redact`` strips it wherever it shows up."""
    if value and len(value) >= 6:
        _known.add(value)


def redact(text: str) -> str:
    for value in _known:
        if value in text:
            text = text.replace(value, MASK)
    text = _URL.sub(_mask_url, text)
    return _KEY_SHAPES.sub(_mask_match, text)


def redact_url(url: str) -> str:
    """``url`` with its user information and query values masked (scheme, host and path kept)."""
    return _QUERY_VALUE.sub(rf"\1{MASK}", _USERINFO.sub(rf"\1{MASK}@", url))


def _mask_url(match: re.Match[str]) -> str:
    return redact_url(match.group(0))


def _mask_match(match: re.Match[str]) -> str:
    if match.group(1):
        return MASK
    return f"{match.group(2)}{MASK}"
