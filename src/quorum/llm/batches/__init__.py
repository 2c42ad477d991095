"""Provider batch APIs: half the price, answers within 24 hours.

``batches_for("anthropic/claude-haiku-4-5")`` gives the adapter for a model string; the
driver that follows batches to their end, crash-safe, is ``quorum.engine.batches``.
"""

from __future__ import annotations

from typing import Any

from quorum.errors import ConfigError
from quorum.llm.batches.base import (
    BATCH_DISCOUNT,
    BatchApi,
    BatchCounts,
    BatchItem,
    BatchLimits,
    BatchStatus,
    Intent,
    ItemResult,
    group,
)
from quorum.llm.registry import parse_model

__all__ = [
    "BATCH_DISCOUNT",
    "BatchApi",
    "BatchCounts",
    "BatchItem",
    "BatchLimits",
    "BatchStatus",
    "Intent",
    "ItemResult",
    "batches_for",
    "group",
]


def batches_for(spec: str, **options: Any) -> BatchApi:
    """The batch API of the provider a model string names (options as for ``connect``)."""
    provider, model = parse_model(spec)
    if provider == "anthropic":
        from quorum.llm.batches.anthropic import AnthropicBatches

        return AnthropicBatches(model or None, **options)
    if provider == "openai":
        from quorum.llm.batches.openai import OpenAIBatches

        return OpenAIBatches(model or None, **options)
    if provider == "fake":
        from quorum.llm.batches.fake import FakeBatches
        from quorum.llm.fake import FakeProvider

        return FakeBatches(FakeProvider(model=model or "fake", **options), time_to_end=0.0)
    raise ConfigError(
        f"{spec!r}: provider {provider!r} has no batch API; --batch-api works with anthropic/... "
        "and openai/... models (OpenAI's own API: other OpenAI-compatible servers have no batches)"
    )
