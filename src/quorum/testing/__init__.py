"""Test doubles for quorum and for your own workflows: the emulator of the Anthropic and
OpenAI HTTP APIs, the fake provider, and a virtual clock."""

from quorum.llm.fake import FakeProvider, load_rules
from quorum.testing.clock import VirtualClock
from quorum.testing.emulator import Emulator, EmulatorStats, parse_latency

__all__ = ["Emulator", "EmulatorStats", "FakeProvider", "VirtualClock", "load_rules", "parse_latency"]
