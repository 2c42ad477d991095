"""Dollars per million tokens, per model, and the cost of a call.

Prices are the providers' public list prices for standard (non-batch) use, as published in
autumn 2026; a model the table does not list costs ``None``. Tiered prices (Haiku 5.5's long
prompts) are left out rather than guessed. Cache writes
are Anthropic's 5-minute writes (1.25x input) and cache reads 0.1x input; OpenAI bills
cached prompt tokens at its own discounted rate and has no write charge. A model not in
the table costs ``None``: an unknown price is reported as unknown, never as $0.
``set_price`` adds or corrects an entry (a new model, a negotiated rate).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from quorum.llm.types import Usage


@dataclass(frozen=True, slots=True)
class Price:
    input: float
    output: float
    cache_read: float
    cache_write: float


def _anthropic(input_: float, output: float) -> Price:
    return Price(input_, output, cache_read=input_ * 0.1, cache_write=input_ * 1.25)


def _openai(input_: float, output: float, cached: float) -> Price:
    return Price(input_, output, cache_read=cached, cache_write=input_)


_PRICES: dict[str, Price] = {
    # Anthropic (list prices as published in autumn 2026)
    "claude-opus-5-5": _anthropic(4.0, 20.0),
    "claude-opus-5": _anthropic(5.0, 25.0),
    "claude-opus-4-8": _anthropic(5.0, 25.0),
    "claude-opus-4-7": _anthropic(5.0, 25.0),
    "claude-opus-4-6": _anthropic(5.0, 25.0),
    "claude-opus-4-5": _anthropic(5.0, 25.0),
    "claude-opus-4-1": _anthropic(15.0, 75.0),
    "claude-opus-4": _anthropic(15.0, 75.0),
    "claude-sonnet-5-5": _anthropic(2.0, 10.0),
    "claude-sonnet-5": _anthropic(2.0, 10.0),
    "claude-sonnet-4-6": _anthropic(3.0, 15.0),
    "claude-sonnet-4-5": _anthropic(3.0, 15.0),
    "claude-sonnet-4": _anthropic(3.0, 15.0),
    "claude-3-7-sonnet": _anthropic(3.0, 15.0),
    "claude-haiku-4-5": _anthropic(1.0, 5.0),
    "claude-3-5-haiku": _anthropic(0.8, 4.0),
    "claude-3-haiku": _anthropic(0.25, 1.25),
    # OpenAI
    "gpt-5": _openai(1.25, 10.0, 0.125),
    "gpt-5-mini": _openai(0.25, 2.0, 0.025),
    "gpt-5-nano": _openai(0.05, 0.40, 0.005),
    "gpt-4.1": _openai(2.0, 8.0, 0.50),
    "gpt-4.1-mini": _openai(0.40, 1.60, 0.10),
    "gpt-4.1-nano": _openai(0.10, 0.40, 0.025),
    "gpt-4o": _openai(2.50, 10.0, 1.25),
    "gpt-4o-mini": _openai(0.15, 0.60, 0.075),
    "o3": _openai(2.0, 8.0, 0.50),
    "o4-mini": _openai(1.10, 4.40, 0.275),
    # The embedded model runs on this machine: it is free, and we know it.
    "local": Price(0.0, 0.0, 0.0, 0.0),
}


def set_price(model: str, price: Price) -> None:
    _PRICES[model] = price
    price_of.cache_clear()


@lru_cache(maxsize=256)  # every reply asks: a prefix search per call would show in the engine
def price_of(model: str) -> Price | None:
    """Exact name first, then the longest known name it starts with, so dated snapshots
    (``claude-sonnet-4-20250514``, ``gpt-4o-2024-08-06``) find their family."""
    name = model.split("/", 1)[-1]
    if name in _PRICES:
        return _PRICES[name]
    stems = [known for known in _PRICES if name.startswith(known + "-")]
    return _PRICES[max(stems, key=len)] if stems else None


def cost_of(model: str, usage: Usage) -> float | None:
    price = price_of(model)
    if price is None:
        return None
    dollars = (
        usage.input_tokens * price.input
        + usage.output_tokens * price.output
        + usage.cache_read_tokens * price.cache_read
        + usage.cache_write_tokens * price.cache_write
    )
    return dollars / 1_000_000
