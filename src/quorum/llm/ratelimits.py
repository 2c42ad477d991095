"""What providers' rate-limit headers say, read into one shape.

Anthropic sends ``anthropic-ratelimit-{requests,tokens,input-tokens,output-tokens}-
{limit,remaining,reset}`` (reset as an RFC 3339 time); OpenAI and compatible servers send
``x-ratelimit-{limit,remaining,reset}-{requests,tokens}`` (reset as a duration like
``6m0s``). Both also send ``retry-after`` (seconds) and sometimes ``retry-after-ms``.
Some OpenAI-compatible gateways send the reset as a Unix timestamp (seconds or
milliseconds): a number too large to be a duration is read as that absolute time.
The limiter learns from this: see ``quorum.engine.limits``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime

BUCKETS = ("requests", "tokens", "input_tokens", "output_tokens")


@dataclass(frozen=True, slots=True)
class Bucket:
    limit: int | None = None
    remaining: int | None = None
    reset_s: float | None = None  # seconds from when the headers were read


@dataclass(frozen=True, slots=True)
class RateLimitInfo:
    buckets: Mapping[str, Bucket] = field(default_factory=dict)
    retry_after: float | None = None

    def __bool__(self) -> bool:
        return bool(self.buckets) or self.retry_after is not None


def parse_headers(headers: Mapping[str, str], *, now: datetime | None = None) -> RateLimitInfo:
    """Read either header family; unknown or malformed values are skipped, never guessed."""
    lower = {k.lower(): v for k, v in headers.items()}
    now = now or datetime.now(UTC)
    buckets: dict[str, Bucket] = {}
    for name in BUCKETS:
        bucket = _anthropic_bucket(lower, name, now) or _openai_bucket(lower, name, now)
        if bucket is not None:
            buckets[name] = bucket
    return RateLimitInfo(buckets=buckets, retry_after=retry_after(lower))


def retry_after(headers: Mapping[str, str]) -> float | None:
    """``retry-after-ms`` if present (more precise), else ``retry-after`` in seconds."""
    lower = {k.lower(): v for k, v in headers.items()}
    ms = _number(lower.get("retry-after-ms"))
    if ms is not None and ms >= 0:
        return ms / 1000.0
    seconds = _number(lower.get("retry-after"))
    return seconds if seconds is not None and seconds >= 0 else None


def _anthropic_bucket(h: Mapping[str, str], name: str, now: datetime) -> Bucket | None:
    prefix = "anthropic-ratelimit-" + name.replace("_", "-")
    limit, remaining = _int(h.get(prefix + "-limit")), _int(h.get(prefix + "-remaining"))
    if limit is None and remaining is None:
        return None
    return Bucket(limit, remaining, _seconds_until(h.get(prefix + "-reset"), now))


def _openai_bucket(h: Mapping[str, str], name: str, now: datetime) -> Bucket | None:
    if name not in ("requests", "tokens"):
        return None
    limit = _int(h.get(f"x-ratelimit-limit-{name}"))
    remaining = _int(h.get(f"x-ratelimit-remaining-{name}"))
    if limit is None and remaining is None:
        return None
    return Bucket(limit, remaining, _reset_s(h.get(f"x-ratelimit-reset-{name}"), now))


# Durations above this are not durations: a Unix time in seconds (from 2001 on)...
_EPOCH_S = 1e9
# ...or in milliseconds.
_EPOCH_MS = 1e12


def _reset_s(text: str | None, now: datetime) -> float | None:
    """Seconds until the reset, whether it came as a duration or as a Unix timestamp."""
    value = parse_duration(text)
    if value is None or value < _EPOCH_S:
        return value
    stamp = value / 1000.0 if value >= _EPOCH_MS else value
    return max(0.0, stamp - now.timestamp())


_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|h|m|s)")
_UNIT_S = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}


def parse_duration(text: str | None) -> float | None:
    """``1s``, ``6m0s``, ``20ms``, ``1h2m`` or a bare number of seconds."""
    if not text:
        return None
    plain = _number(text)
    if plain is not None:
        return plain
    parts = _DURATION.findall(text.strip())
    if not parts or "".join(n + u for n, u in parts) != text.strip():
        return None
    return sum(float(n) * _UNIT_S[u] for n, u in parts)


def _seconds_until(stamp: str | None, now: datetime) -> float | None:
    if not stamp:
        return None
    try:
        when = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    except ValueError:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - now).total_seconds())


def _number(text: str | None) -> float | None:
    if text is None:
        return None
    try:
        return float(text.strip())
    except ValueError:
        return None


def _int(text: str | None) -> int | None:
    value = _number(text)
    return int(value) if value is not None else None
