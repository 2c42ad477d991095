"""Keeping API keys out of everything quorum writes.

Adapters hold keys in ``Secret`` (whose ``repr`` and ``str`` show only a mask) and register
every key they load. ``redact`` removes registered keys, key-shaped strings and auth
header values from any text before it reaches a log line, an exception or a report.
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
    return _KEY_SHAPES.sub(_mask_match, text)


def _mask_match(match: re.Match[str]) -> str:
    if match.group(1):
        return MASK
    return f"{match.group(2)}{MASK}"
