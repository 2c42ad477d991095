"""quorum: run many LLM calls at once, safely and cheaply."""

from quorum.llm import FakeProvider, Message, Reply, Request, Usage

__version__ = "0.1.0"

__all__ = ["FakeProvider", "Message", "Reply", "Request", "Usage", "__version__"]
