"""The figures every command's JSON shares, under the same keys in every command.

Every JSON document a command writes carries ``schema_version`` and a ``summary`` whose
run totals are spelled the same way everywhere: ``calls``, ``wall_s`` (seconds of wall
time), ``usage`` (``input_tokens``, ``output_tokens``), ``cost_usd`` (``null`` when a
price is unknown, 0 when no call was made) and ``stopped`` (why dispatch stopped early,
if it did). Per-item times are ``wall_s`` too. Bump ``SCHEMA_VERSION`` when a key changes
meaning or goes away.
"""

from __future__ import annotations

import re
from typing import Any

from quorum.engine.outcome import Summary

SCHEMA_VERSION = 1


def totals(summary: Summary) -> dict[str, Any]:
    """A run's totals under the shared keys."""
    return {
        "calls": summary.calls,
        "wall_s": round(summary.wall_s, 3),
        "usage": summary.usage.as_json(),
        "cost_usd": summary.known_cost,
        "stopped": stopped_reason(summary),
    }


_SPENT_AT_STOP = re.compile(r"\s*\(spent [^)]*\)")


def stopped_cause(summary: Summary) -> str | None:
    """Why dispatch stopped early, without the spending figure of that moment."""
    return _SPENT_AT_STOP.sub("", summary.stopped) if summary.stopped else None


def stopped_reason(summary: Summary) -> str | None:
    """Why dispatch stopped early, with one spending figure: the run's true total. The
    figure at the moment a budget was reached leaves out the calls then in flight, which
    finish and are paid for."""
    reason = summary.stopped
    if not reason or "budget" not in reason:
        return reason
    return f"{stopped_cause(summary)}; spent {summary.spent_text()} in all, the calls in flight included"
