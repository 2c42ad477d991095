"""Checks for numeric options: every number a user passes is finite and of the right type,
or a ``ConfigError`` that names the option and says what was expected.

``float('nan')`` compares false with everything, so an unchecked ``timeout=nan`` never
expires and ``rpm=nan`` never limits; ``True`` is an ``int`` in Python, and a string
``'60'`` fails deep inside arithmetic. These checks run once, where an option enters.
"""

from __future__ import annotations

import math
from numbers import Real

from quorum.errors import ConfigError


def seconds(name: str, value: object) -> float | None:
    """A positive, finite number of seconds, or ``None`` for no limit."""
    if value is None:
        return None
    return positive(name, value, unit=" seconds")


def positive(name: str, value: object, *, unit: str = "") -> float:
    """A finite number above zero."""
    number = _real(name, value)
    if not number > 0:
        raise ConfigError(f"{name} must be above zero{unit}, got {value!r}")
    return number


def non_negative(name: str, value: object) -> float:
    """A finite number, zero or more."""
    number = _real(name, value)
    if number < 0:
        raise ConfigError(f"{name} cannot be negative, got {value!r}")
    return number


def count(name: str, value: object, *, minimum: int = 1) -> int:
    """A whole number of at least ``minimum`` (``1.5`` and ``True`` are refused)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{name} must be a whole number, got {value!r} ({type(value).__name__})")
    if value < minimum:
        raise ConfigError(f"{name} must be at least {minimum}, got {value}")
    return value


def _real(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, Real):
        raise ConfigError(f"{name} must be a number, got {value!r} ({type(value).__name__})")
    number = float(value)
    if not math.isfinite(number):
        raise ConfigError(f"{name} must be a finite number, got {value!r}")
    return number
