"""The response cache: one entry per request, content-addressed, shared by processes.

The key is SHA-256 over a canonical JSON of everything that shapes a reply: the
provider, its model, the endpoint's host, every field of the ``Request`` except the three
that do not change the answer (``on_first_byte``, ``cache_prefix``, ``metadata``), the
request's **sample index** and ``KEY_VERSION``. Never the API key. A field added to
``Request`` later shapes the key by itself, so a new sampling parameter cannot be
forgotten.

The sample index tells apart answers one asks for on purpose more than once: five
voters with the same prompt are five samples, not one answer read five times. It is
``Request.metadata["sample"]`` (a string, ``"0"`` when absent); the voting pattern sets
it to the voter's position on the ballot. Running the same vote again reads the same
five entries back.

Storage is SQLite from the standard library in WAL mode, so several processes on one
machine read and write one file at once. It lives in ``$QUORUM_CACHE_DIR``, else
``$XDG_CACHE_HOME/quorum``, else ``~/.cache/quorum``. Errors, cut-off answers and invalid
replies are never stored (an invalid reply is an exception, never a ``Reply``). Another
process holding the file's lock past ``busy_s`` costs one lookup or one store, not the
cache: the call goes on as a miss, or unstored. A file that is corrupt or read-only, or
locked ``LOCKS_IN_A_ROW`` times in a row, turns the cache off for the rest of the process
with one warning: a broken cache never fails a run.

``Cached(provider, cache)`` is the cache as a wrapper: the same ``complete(request)``.
Around a ``Connection`` (the outermost place) a hit skips the limits, the retries and the
bill; ``connect(..., cache=...)`` puts it there.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import sqlite3
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from quorum.llm.provider import Fronting, Provider
from quorum.llm.types import Reply, Request, Usage

log = logging.getLogger("quorum.cache")

KEY_VERSION = 1
SAMPLE = "sample"  # the metadata key of the sample index
FILE_NAME = "responses.sqlite3"
# Locks past busy_s, one after the other, that mean the file is held for good (a stuck
# process) rather than busy for a moment; each one delays its call by busy_s.
LOCKS_IN_A_ROW = 3
# Request fields that never change the answer: a callback, a hint to cache a prompt
# prefix (it changes the bill, not the reply) and free-form labels (the sample index is
# read from them on purpose).
_NOT_IN_KEY = frozenset({"on_first_byte", "cache_prefix", "metadata"})
_SCHEMA = """
CREATE TABLE IF NOT EXISTS replies (
    key TEXT PRIMARY KEY,
    reply TEXT NOT NULL,
    cost REAL,
    created REAL NOT NULL,
    used REAL NOT NULL,
    hits INTEGER NOT NULL DEFAULT 0
)
"""


def default_dir() -> Path:
    """``$QUORUM_CACHE_DIR``, else the user's XDG cache directory."""
    chosen = os.environ.get("QUORUM_CACHE_DIR")
    if chosen:
        return Path(chosen)
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "quorum"


def endpoint_of(provider: Provider) -> str:
    """The host (and port) a provider calls, ``""`` for one that calls nothing."""
    base = getattr(provider, "base_url", None) or getattr(provider, "_base_url", None)
    if not isinstance(base, str):
        return ""
    return urlparse(base).netloc or base


def _canonical(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _canonical(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_canonical(v) for v in value]
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _canonical(getattr(value, f.name)) for f in dataclasses.fields(value)}
    return value


def request_key(provider: Provider, request: Request) -> str:
    """The cache key of ``request`` sent to ``provider``: hex SHA-256 of a canonical JSON."""
    shaping = {
        f.name: _canonical(getattr(request, f.name))
        for f in dataclasses.fields(request)
        if f.name not in _NOT_IN_KEY
    }
    document = {
        "v": KEY_VERSION,
        "provider": provider.name,
        "model": provider.model,
        "endpoint": endpoint_of(provider),
        "request": shaping,
        SAMPLE: str(request.metadata.get(SAMPLE, "0")),
    }
    text = json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=repr)
    return hashlib.sha256(text.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class CacheHit:
    """``Reply.raw`` of an answer read from the cache: its key and what it first cost."""

    key: str
    original_cost: float | None


@dataclass(slots=True)
class CacheCounts:
    """What this process's cache did: hits, the dollars they did not spend, misses, stores."""

    hits: int = 0
    saved: float = 0.0
    misses: int = 0
    stored: int = 0

    def line(self) -> str:
        return f"{self.hits} from cache, ${self.saved:.2f} not spent"

    def since(self, earlier: CacheCounts) -> CacheCounts:
        """What happened after ``earlier`` (a copy of these counts taken before)."""
        return CacheCounts(
            self.hits - earlier.hits,
            self.saved - earlier.saved,
            self.misses - earlier.misses,
            self.stored - earlier.stored,
        )

    def copy(self) -> CacheCounts:
        return CacheCounts(self.hits, self.saved, self.misses, self.stored)


# Every cache of this process together: what a command's closing line reports.
TOTALS = CacheCounts()


def reply_fields(reply: Reply) -> dict[str, Any]:
    """A ``Reply`` as JSON data, its cost and SDK response left out (the cache keeps the
    cost in a column of its own)."""
    u = reply.usage
    return {
        "text": reply.text,
        "model": reply.model,
        "usage": [u.input_tokens, u.output_tokens, u.cache_read_tokens, u.cache_write_tokens],
        "data": reply.data,
        "stop_reason": reply.stop_reason,
        "latency_s": reply.latency_s,
    }


def reply_to_json(reply: Reply) -> str:
    return json.dumps(reply_fields(reply), ensure_ascii=False)


def reply_from_json(text: str, key: str, cost: float | None) -> Reply:
    d = json.loads(text)
    return Reply(
        text=d["text"],
        model=d["model"],
        usage=Usage(*d["usage"]),
        data=d["data"],
        stop_reason=d["stop_reason"],
        latency_s=0.0,
        cost=0.0,
        raw=CacheHit(key, cost),
    )


class ResponseCache:
    """The SQLite file of replies. Opened on first use; off for good after a failure."""

    def __init__(self, path: str | Path | None = None, *, busy_s: float = 0.5) -> None:
        self.path = Path(path) if path is not None else default_dir() / FILE_NAME
        self.busy_s = busy_s
        self.counts = CacheCounts()
        self._db: sqlite3.Connection | None = None
        self._broken: str | None = None
        self._locks_in_a_row = 0

    def __repr__(self) -> str:
        return f"ResponseCache({str(self.path)!r})"

    @property
    def working(self) -> bool:
        return self._broken is None

    # -- the operations ------------------------------------------------------------------

    def lookup(self, provider: Provider, request: Request) -> tuple[str, Reply | None]:
        """``request``'s key for ``provider`` and the stored reply, if any."""
        if self._broken is not None:
            return "", None
        key = request_key(_innermost(provider), request)
        return key, self.get(key)

    def store(self, provider: Provider, request: Request, reply: Reply) -> None:
        """Store ``reply`` as ``provider``'s answer to ``request`` (as ``put`` does)."""
        self.put(request_key(_innermost(provider), request), reply)

    def get(self, key: str) -> Reply | None:
        """The stored reply for ``key`` (costing $0, its first usage kept), else ``None``."""
        db = self._open()
        if db is None:
            return None
        try:
            row = db.execute("SELECT reply, cost FROM replies WHERE key = ?", (key,)).fetchone()
        except sqlite3.Error as exc:
            self._failed(exc)
            row = None
        if row is None:
            self.counts.misses += 1
            TOTALS.misses += 1
            return None
        try:
            reply = reply_from_json(row[0], key, row[1])
        except (ValueError, KeyError, TypeError) as exc:
            self._give_up(exc)
            return None
        self._touch(db, key)
        for counts in (self.counts, TOTALS):
            counts.hits += 1
            counts.saved += row[1] or 0.0
        return reply

    def put(self, key: str, reply: Reply) -> None:
        """Store a good reply; a cut-off one is never stored."""
        if reply.truncated or isinstance(reply.raw, CacheHit):
            return
        db = self._open()
        if db is None:
            return
        now = time.time()
        try:
            db.execute(
                "INSERT OR REPLACE INTO replies (key, reply, cost, created, used) VALUES (?, ?, ?, ?, ?)",
                (key, reply_to_json(reply), reply.cost, now, now),
            )
        except sqlite3.Error as exc:
            self._failed(exc)
            return
        except (TypeError, ValueError) as exc:
            self._give_up(exc)
            return
        self._locks_in_a_row = 0
        self.counts.stored += 1
        TOTALS.stored += 1

    # -- maintenance (``quorum cache``) ----------------------------------------------------

    def stats(self) -> dict[str, Any]:
        db = self._open()
        if db is None:
            return {"path": str(self.path), "working": False, "problem": self._broken}
        entries, hits, cost, oldest = db.execute(
            "SELECT count(*), coalesce(sum(hits), 0), coalesce(sum(cost * hits), 0), min(created) "
            "FROM replies"
        ).fetchone()
        size = sum(p.stat().st_size for p in self.path.parent.glob(self.path.name + "*") if p.is_file())
        return {
            "path": str(self.path),
            "working": True,
            "entries": entries,
            "hits": hits,
            "saved": round(cost, 6),
            "bytes": size,
            "oldest": oldest,
        }

    def clear(self) -> int:
        return self.prune(older_than_s=None)

    def prune(self, *, older_than_s: float | None) -> int:
        """Delete entries not used for ``older_than_s`` seconds (all with ``None``); how many."""
        db = self._open()
        if db is None:
            return 0
        if older_than_s is None:
            gone = db.execute("DELETE FROM replies").rowcount
        else:
            gone = db.execute("DELETE FROM replies WHERE used < ?", (time.time() - older_than_s,)).rowcount
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        db.execute("VACUUM")
        return int(gone)

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    def _touch(self, db: sqlite3.Connection, key: str) -> None:
        """Note a hit's use for ``prune``; bookkeeping, so a lock only skips it."""
        try:
            db.execute("UPDATE replies SET used = ?, hits = hits + 1 WHERE key = ?", (time.time(), key))
        except sqlite3.Error as exc:
            self._failed(exc)
            return
        self._locks_in_a_row = 0

    # -- opening and failing ---------------------------------------------------------------

    def _open(self) -> sqlite3.Connection | None:
        if self._db is not None or self._broken is not None:
            return self._db
        db: sqlite3.Connection | None = None
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(
                self.path, timeout=self.busy_s, isolation_level=None, check_same_thread=False
            )
            # Switching a new file to WAL needs it to itself: a second process creating the
            # same file at that moment waits, and past busy_s tries again on its next call.
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")  # a cache may lose its last writes on power loss
            db.execute(_SCHEMA)
        except (sqlite3.Error, OSError) as exc:
            if db is not None:
                db.close()
            self._failed(exc)
            return None
        self._db = db
        return db

    def _failed(self, exc: BaseException) -> None:
        """A lock another process holds costs this one operation, until ``LOCKS_IN_A_ROW``
        of them say the file is held for good; anything else turns the cache off."""
        if _is_lock(exc):
            self._locks_in_a_row += 1
            if self._locks_in_a_row < LOCKS_IN_A_ROW:
                log.debug("the response cache %s is locked by another process; skipped once", self.path)
                return
        self._give_up(exc)

    def _give_up(self, exc: BaseException) -> None:
        self._broken = f"{type(exc).__name__}: {exc}"
        log.warning(
            "the response cache %s cannot be used (%s); running without a cache. "
            "Fix or delete the file, or pass --no-cache.",
            self.path,
            self._broken,
        )
        if self._db is not None:
            try:
                self._db.close()
            except sqlite3.Error:
                pass
            self._db = None


class Cached(Fronting):
    """``provider`` behind ``cache``: a hit is answered at once, a good miss is stored.

    Put it around a ``Connection`` so a hit takes no rate capacity, no retry and no
    bill: its ``Reply`` costs $0, keeps the usage of the call that first paid for it and
    carries a ``CacheHit`` as ``raw``."""

    def __init__(self, provider: Provider, cache: ResponseCache) -> None:
        self.provider = provider
        self.cache = cache

    def __repr__(self) -> str:
        return f"Cached({self.provider!r}, {self.cache!r})"

    async def complete(self, request: Request) -> Reply:
        key, hit = self.cache.lookup(self.provider, request)
        if hit is not None:
            return hit
        reply = await self.provider.complete(request)
        if key:
            self.cache.put(key, reply)
        return reply

    async def aclose(self) -> None:
        closer = getattr(self.provider, "aclose", None)
        if closer is not None:
            await closer()


def _is_lock(exc: BaseException) -> bool:
    """SQLITE_BUSY or SQLITE_LOCKED, with any extended code: another connection's lock."""
    code = getattr(exc, "sqlite_errorcode", None)
    return isinstance(code, int) and code & 0xFF in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)


def _innermost(provider: Provider) -> Provider:
    """The provider that really calls (under connections and wrappers): its endpoint
    belongs in the key."""
    inner = getattr(provider, "provider", None)
    while inner is not None:
        provider = inner
        inner = getattr(provider, "provider", None)
    return provider


def open_cache(cache: bool | str | Path | ResponseCache | None) -> ResponseCache | None:
    """What ``connect(cache=...)`` accepts: ``True`` (the default file), a path, a
    ``ResponseCache``, or ``None``/``False`` for none."""
    if cache is None or cache is False:
        return None
    if cache is True:
        return ResponseCache()
    if isinstance(cache, ResponseCache):
        return cache
    return ResponseCache(cache)
