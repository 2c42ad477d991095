"""What every provider batch API offers quorum, and the rules they share.

A batch API takes many requests at once and answers them within 24 hours at half the
price. Each adapter (``anthropic.py``, ``openai.py``, ``fake.py``) turns quorum
``Request`` objects into one provider batch, reports its state, cancels it, finds it
again from what the journal wrote before ``create`` (an orphan), and reads its results
back as ``ItemResult`` joined by ``custom_id`` (providers do not keep input order).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Generic, Literal, Protocol, TypeVar

from quorum import errors
from quorum.llm.http_errors import Boundary
from quorum.llm.types import Reply, Request

BATCH_DISCOUNT = 0.5  # both providers bill batch tokens at half the online price
ItemKind = Literal["succeeded", "errored", "expired", "canceled"]
_WIRE_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")  # what Anthropic accepts as a custom_id


@dataclass(frozen=True, slots=True)
class BatchLimits:
    """The most one batch may hold: requests and bytes of request bodies."""

    max_requests: int
    max_bytes: int


@dataclass(frozen=True, slots=True)
class BatchItem:
    """One request of a batch, under the id its result comes back with."""

    custom_id: str
    request: Request


@dataclass(frozen=True, slots=True)
class BatchCounts:
    total: int = 0
    processing: int = 0
    succeeded: int = 0
    errored: int = 0
    expired: int = 0
    canceled: int = 0


@dataclass(frozen=True, slots=True)
class BatchStatus:
    """A remote batch as last seen: its id, the provider's own state word, whether it has
    ended (results can be read), its counts and when it was created (Unix seconds)."""

    id: str
    state: str
    ended: bool
    counts: BatchCounts
    created_at: float


@dataclass(frozen=True, slots=True)
class ItemResult:
    """One item's outcome: a ``Reply`` billed at the batch price, or the error (a quorum
    error; ``expired`` and ``canceled`` items were never answered and may be sent again)."""

    custom_id: str
    kind: ItemKind
    reply: Reply | None = None
    error: errors.QuorumError | None = None


@dataclass(frozen=True, slots=True)
class Intent:
    """What the journal records before ``create``: enough to find the batch again if the
    process dies before its id is written. ``tag`` is unique per submission."""

    job_id: str
    tag: str
    custom_ids: tuple[str, ...]
    written_at: float  # Unix seconds


class BatchApi(Protocol):
    """One provider's batch API, through its official SDK."""

    name: str
    model: str
    limits: BatchLimits

    def item_size(self, item: BatchItem) -> int:
        """Bytes the item takes in the provider's request body or file."""
        ...

    async def create(self, intent: Intent, items: Sequence[BatchItem]) -> BatchStatus: ...

    async def retrieve(self, batch_id: str) -> BatchStatus: ...

    async def cancel(self, batch_id: str) -> BatchStatus: ...

    async def find(self, intent: Intent, claimed: frozenset[str] = frozenset()) -> BatchStatus | None:
        """The batch created for ``intent`` whose id the journal never got, if any; a batch
        in ``claimed`` belongs to another intent and is never the answer."""
        ...

    def results(self, batch_id: str, items: Sequence[BatchItem]) -> AsyncIterator[ItemResult]:
        """Every item's result, once each; an item the provider did not report is expired."""
        ...

    async def aclose(self) -> None: ...


class OnlineAdapter(Protocol):
    """What a batch adapter borrows from its provider's online adapter."""

    @property
    def model(self) -> str: ...

    @property
    def _boundary(self) -> Boundary: ...

    async def aclose(self) -> None: ...


Online = TypeVar("Online", bound=OnlineAdapter)


class OnlineBacked(Generic[Online]):
    """A batch adapter built on its provider's online adapter: the same client, request
    builder, reply reader and SDK error mapping serve batches too."""

    name: str

    def __init__(self, online: Online, limits: BatchLimits) -> None:
        self._online = online
        self.model = online.model
        self.limits = limits
        self._boundary = online._boundary

    def __repr__(self) -> str:
        return f"{type(self).__name__}(model={self.model!r})"

    async def aclose(self) -> None:
        await self._online.aclose()


def group(
    items: Iterable[BatchItem], limits: BatchLimits, size: Callable[[BatchItem], int]
) -> list[list[BatchItem]]:
    """Items cut into batches in order, each under the provider's request and byte limits."""
    batches: list[list[BatchItem]] = []
    current: list[BatchItem] = []
    used = 0
    for item in items:
        weight = size(item)
        if weight > limits.max_bytes:
            raise errors.RequestTooLarge(
                f"batch item {item.custom_id!r} takes {weight} bytes, more than a whole batch "
                f"({limits.max_bytes}); shorten it or run it online"
            )
        if current and (len(current) >= limits.max_requests or used + weight > limits.max_bytes):
            batches.append(current)
            current, used = [], 0
        current.append(item)
        used += weight
    if current:
        batches.append(current)
    return batches


def batch_priced(reply: Reply) -> Reply:
    """The reply billed at the batch price (half the online price of the same usage)."""
    if reply.cost is None:
        return reply
    return replace(reply, cost=reply.cost * BATCH_DISCOUNT)


def batch_billed(exc: errors.InvalidReply) -> errors.InvalidReply:
    """An answered-but-invalid item, billed at the batch price."""
    if exc.cost is not None:
        exc.cost *= BATCH_DISCOUNT
    return exc


def answered(custom_id: str, read: Callable[[], Reply]) -> ItemResult:
    """A succeeded item's result: the reply ``read`` gives, at the batch price, or the
    error when the answer breaks the request's schema (billed at the batch price too)."""
    try:
        reply = read()
    except errors.InvalidReply as exc:
        return ItemResult(custom_id, "errored", error=batch_billed(exc))
    return ItemResult(custom_id, "succeeded", reply=batch_priced(reply))


class ResultJoin:
    """Result lines joined to the submitted items by their wire id, each item once:
    a line that is not ours, or names an item already answered, is passed over."""

    def __init__(self, items: Sequence[BatchItem]) -> None:
        self.items = items
        self.seen: set[str] = set()
        self._by_wire = {wire_id(item.custom_id): item for item in items}

    def claim(self, line_id: str) -> BatchItem | None:
        item = self._by_wire.get(line_id)
        if item is None or item.custom_id in self.seen:
            return None
        self.seen.add(item.custom_id)
        return item

    def unanswered(self, provider: str) -> Iterable[ItemResult]:
        return unanswered(self.items, self.seen, provider)


def wire_id(custom_id: str) -> str:
    """A provider-safe custom_id: the id itself when it fits, else a digest of it."""
    if _WIRE_ID.match(custom_id):
        return custom_id
    return "q-" + hashlib.sha256(custom_id.encode()).hexdigest()[:40]


def expired(custom_id: str, provider: str, why: str) -> ItemResult:
    message = f"{provider}: batch item {custom_id!r} {why}; it can be sent again"
    return ItemResult(custom_id, "expired", error=errors.Timeout(message, provider=provider))


def canceled(custom_id: str, provider: str) -> ItemResult:
    message = f"{provider}: batch item {custom_id!r} was canceled before it ran; it can be sent again"
    return ItemResult(custom_id, "canceled", error=errors.Timeout(message, provider=provider))


def unanswered(items: Sequence[BatchItem], seen: set[str], provider: str) -> Iterable[ItemResult]:
    """Items the results never mentioned: the provider dropped them, so they count as expired."""
    for item in items:
        if item.custom_id not in seen:
            yield expired(item.custom_id, provider, "is missing from the batch results")
