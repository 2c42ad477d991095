"""Failure policies, with the chapter's names and meaning, plus ``Quorum(k)``."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from quorum.errors import ConfigError


class FailurePolicy(Enum):
    """How a run treats failures.

    IGNORE: run everything and keep what succeeded. FAIL_FAST: the first failure cancels
    the calls in flight (so billing stops) and skips the rest, then the run raises.
    RETRY: retry failed tasks (``Retry`` decides which and how often). REQUIRE_ALL: run
    everything, then raise listing every failure. ``FailurePolicy.quorum(k)``: done once
    ``k`` tasks succeeded; the calls still in flight are cancelled.
    """

    IGNORE = "ignore"
    FAIL_FAST = "fail_fast"
    RETRY = "retry"
    REQUIRE_ALL = "require_all"

    @staticmethod
    def quorum(k: int) -> Quorum:
        return Quorum(k)


@dataclass(frozen=True, slots=True)
class Quorum:
    """Done once ``k`` tasks have succeeded; raises ``QuorumNotReached`` if they cannot."""

    k: int

    def __post_init__(self) -> None:
        if self.k < 1:
            raise ConfigError(f"Quorum(k) needs k >= 1, got {self.k}")


Policy = FailurePolicy | Quorum
