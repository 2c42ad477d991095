"""Caps on what a run may spend. Dispatch stops once a cap is reached: the calls already
in flight finish (their cost is real), and the tasks not yet started are reported skipped."""

from __future__ import annotations

from dataclasses import dataclass, field

from quorum.errors import BudgetExceeded, ConfigError
from quorum.llm.types import Usage


@dataclass
class Budget:
    """A dollar cap, a token cap, or both, shared by every call made under it (nested
    runs included). Calls whose price is unknown count their tokens but no dollars; they
    are counted in ``unpriced`` so a dollar cap never silently passes as enforced."""

    dollars: float | None = None
    tokens: int | None = None
    spent_dollars: float = 0.0
    spent_tokens: int = 0
    unpriced: int = field(default=0)

    def __post_init__(self) -> None:
        if self.dollars is not None and self.dollars < 0:
            raise ConfigError(f"a dollar budget cannot be negative, got {self.dollars}")
        if self.tokens is not None and self.tokens < 0:
            raise ConfigError(f"a token budget cannot be negative, got {self.tokens}")

    def charge(self, usage: Usage, cost: float | None) -> None:
        self.spent_tokens += usage.total_tokens
        if cost is None:
            self.unpriced += 1
        else:
            self.spent_dollars += cost

    @property
    def exhausted(self) -> str | None:
        """Why the budget is spent, or ``None`` while there is some left."""
        if self.dollars is not None and self.spent_dollars >= self.dollars:
            return f"dollar budget ${self.dollars:.4f} reached (spent ${self.spent_dollars:.4f})"
        if self.tokens is not None and self.spent_tokens >= self.tokens:
            return f"token budget {self.tokens:,} reached (spent {self.spent_tokens:,})"
        return None

    def check(self) -> None:
        reason = self.exhausted
        if reason:
            raise BudgetExceeded(reason)
