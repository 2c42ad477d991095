"""Providers: one async method each, official SDKs underneath, errors mapped at the edge."""

from quorum.llm.fake import FakeProvider, Rule, load_rules
from quorum.llm.pricing import Price, cost_of, price_of, set_price
from quorum.llm.provider import Capabilities, Provider
from quorum.llm.ratelimits import Bucket, RateLimitInfo
from quorum.llm.registry import default_model, parse_model, providers, register_provider, resolve
from quorum.llm.schema import schema_of
from quorum.llm.types import Message, Reply, Request, Usage

__all__ = [
    "Bucket",
    "Capabilities",
    "FakeProvider",
    "Message",
    "Price",
    "Provider",
    "RateLimitInfo",
    "Reply",
    "Request",
    "Rule",
    "Usage",
    "cost_of",
    "default_model",
    "load_rules",
    "parse_model",
    "price_of",
    "providers",
    "register_provider",
    "resolve",
    "schema_of",
    "set_price",
]
