"""The job journal: one row per item, so a job killed at any moment resumes.

A row is keyed by the item's stable id and holds the item's fingerprint (a hash of its
content), its status, its result as JSON, usage, cost, attempts (added up over runs) and
the error. Only ``ok`` is final: a re-run skips ok items and calls again for the rest
(failed ones included: most failures are transient, and a permanent one costs nothing).

Commits are grouped: ``record`` queues a row, a writer thread commits what is queued at
once, and ``await committed(seq)`` waits for the commit holding it. A task that waits
before taking its next item keeps the work a kill can lose to the calls in flight. The
rows of a group are committed a few milliseconds after they land (far less than the
100 ms allowed), and the event loop never waits for the file. A commit survives the
process (``kill -9`` included); it is not ``fsync``ed one by one (WAL,
``synchronous=NORMAL``), so a power cut may roll back the last ones, whose items are then
called again.

An item whose content changed under the same id is an error naming the id
(``JournalMismatch``), unless the journal is opened with ``restart=True``, which forgets
every row. One process at a time: a second one on the same journal is refused (an
advisory lock, released by the system even after ``kill -9``).

Provider batches (Anthropic Message Batches, OpenAI Batch) have a table of their own:
``intend_batch`` commits the intent (a name and the item ids) *before* the batch is
created, ``batch_created`` its id right after, so a kill between the two leaves an
intent that a re-run resolves (finds the orphan batch) instead of submitting twice.
"""

from __future__ import annotations

import asyncio
import fcntl
import json
import sqlite3
import threading
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from quorum.errors import ConfigError, QuorumError

VERSION = "1"
OK = "ok"

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    """CREATE TABLE IF NOT EXISTS items (
        id TEXT PRIMARY KEY,
        fingerprint TEXT NOT NULL,
        status TEXT NOT NULL,
        result TEXT,
        usage TEXT,
        cost REAL,
        attempts INTEGER NOT NULL DEFAULT 0,
        error TEXT,
        updated REAL NOT NULL
    )""",
    """CREATE TABLE IF NOT EXISTS batches (
        name TEXT PRIMARY KEY,
        provider TEXT NOT NULL,
        items TEXT NOT NULL,
        state TEXT NOT NULL,
        batch_id TEXT,
        created REAL NOT NULL,
        updated REAL NOT NULL
    )""",
)
_UPSERT = """
INSERT INTO items (id, fingerprint, status, result, usage, cost, attempts, error, updated)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT(id) DO UPDATE SET
    fingerprint = excluded.fingerprint, status = excluded.status, result = excluded.result,
    usage = excluded.usage, cost = excluded.cost, attempts = items.attempts + excluded.attempts,
    error = excluded.error, updated = excluded.updated
"""


class JournalMismatch(ConfigError):
    """An item's content changed under an id the journal already holds."""


class JournalUnwritable(QuorumError):
    """The journal file could not be written (a full disk, a broken file)."""


@dataclass(frozen=True, slots=True)
class Entry:
    """One item as the journal holds it."""

    id: str
    fingerprint: str
    status: str
    result: Any
    usage: dict[str, int]
    cost: float | None
    attempts: int
    error: str | None

    @property
    def finished(self) -> bool:
        return self.status == OK


@dataclass(frozen=True, slots=True)
class BatchRecord:
    """A provider batch: ``state`` is ``intent`` until ``batch_id`` is known."""

    name: str
    provider: str
    items: list[str]
    state: str
    batch_id: str | None
    created: float


class Journal:
    """The journal file at ``path`` (created with its directory when missing)."""

    def __init__(self, path: str | Path, *, restart: bool = False) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock_file = hold_lock(self.path)
        self._write_lock = threading.Lock()
        try:
            self._writer = self._connect()
            self._reader = self._connect()
            self._prepare(restart)
        except BaseException:
            self._lock_file.close()
            raise
        self._queue: list[tuple[Any, ...]] = []
        self._recorded = 0
        self._committed = 0
        self._flusher: asyncio.Task[None] | None = None
        self._done: asyncio.Condition | None = None
        self._failure: JournalUnwritable | None = None

    def __repr__(self) -> str:
        return f"Journal({str(self.path)!r})"

    def _connect(self) -> sqlite3.Connection:
        try:
            db = sqlite3.connect(self.path, timeout=5.0, isolation_level=None, check_same_thread=False)
            db.execute("PRAGMA journal_mode=WAL")
            # Committed rows survive the process (kill -9 included) without an fsync each; a
            # power cut may roll back the last ones: those items are called again, never written twice.
            db.execute("PRAGMA synchronous=NORMAL")
        except sqlite3.DatabaseError as exc:
            raise ConfigError(
                f"the journal {self.path} cannot be read ({exc}); move it away, or run with --restart"
            ) from exc
        return db

    def _prepare(self, restart: bool) -> None:
        with self._write_lock:
            try:
                for statement in _SCHEMA:
                    self._writer.execute(statement)
                version = self._meta("version")
            except sqlite3.DatabaseError as exc:
                raise ConfigError(
                    f"the journal {self.path} cannot be read ({exc}); move it away, or run with --restart"
                ) from exc
            if version not in (None, VERSION):
                raise ConfigError(
                    f"the journal {self.path} has version {version}; this quorum reads {VERSION}"
                )
            if restart:
                self._writer.execute("DELETE FROM items")
                self._writer.execute("DELETE FROM batches")
                self._writer.execute("DELETE FROM meta")
            self._writer.execute("INSERT OR IGNORE INTO meta VALUES ('version', ?)", (VERSION,))
            self._writer.execute("INSERT OR IGNORE INTO meta VALUES ('job', ?)", (uuid.uuid4().hex,))

    def _meta(self, key: str) -> str | None:
        row = self._writer.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    @property
    def job_id(self) -> str:
        """A random id made when the journal was created: a provider batch carries it."""
        with self._write_lock:
            return self._meta("job") or ""

    # -- items ---------------------------------------------------------------------------

    def get(self, item_id: str) -> Entry | None:
        row = self._reader.execute(
            "SELECT id, fingerprint, status, result, usage, cost, attempts, error FROM items WHERE id = ?",
            (item_id,),
        ).fetchone()
        if row is None:
            return None
        result = json.loads(row[3]) if row[3] is not None else None
        usage = json.loads(row[4]) if row[4] else {}
        return Entry(row[0], row[1], row[2], result, usage, row[5], row[6], row[7])

    def check(self, item_id: str, fingerprint: str) -> Entry | None:
        """The item's finished entry (``None`` when it must run); raises
        ``JournalMismatch`` when the journal holds other content under this id."""
        entry = self.get(item_id)
        if entry is None:
            return None
        if entry.fingerprint != fingerprint:
            raise JournalMismatch(
                f"item {item_id!r} changed since the journal {self.path} recorded it (same id, other "
                f"content); give it a new id, or run with --restart to start the job again"
            )
        return entry if entry.finished else None

    def counts(self) -> dict[str, int]:
        rows = self._reader.execute("SELECT status, count(*) FROM items GROUP BY status").fetchall()
        return {str(s): int(n) for s, n in rows}

    def record(
        self,
        item_id: str,
        fingerprint: str,
        status: str,
        *,
        result: Any = None,
        usage: dict[str, int] | None = None,
        cost: float | None = None,
        attempts: int = 1,
        error: str | None = None,
    ) -> int:
        """Queue a row; returns its sequence number for ``committed``. The result must
        be JSON (a ``TypeError`` says so at once, not at the commit)."""
        text = None if result is None else json.dumps(result, ensure_ascii=False)
        usage_text = json.dumps(usage) if usage else None
        row = (item_id, fingerprint, status, text, usage_text, cost, attempts, error, time.time())
        self._queue.append(row)
        self._recorded += 1
        self._start_flusher()
        return self._recorded

    async def committed(self, seq: int) -> None:
        """Wait until the row numbered ``seq`` is committed."""
        if self._committed >= seq:
            return
        self._start_flusher()
        assert self._done is not None
        async with self._done:
            await self._done.wait_for(lambda: self._committed >= seq or self._failure is not None)
        if self._failure is not None:
            raise self._failure

    def _start_flusher(self) -> None:
        if self._flusher is not None and not self._flusher.done():
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # no event loop: ``flush`` at close writes the queue
        if self._done is None:
            self._done = asyncio.Condition()
        self._flusher = loop.create_task(self._flush_loop())

    async def _flush_loop(self) -> None:
        assert self._done is not None
        while self._queue and self._failure is None:
            group, self._queue = self._queue, []
            try:
                await asyncio.to_thread(self._write, group)
            except (sqlite3.Error, OSError) as exc:  # a full disk: every waiter learns it
                self._failure = JournalUnwritable(
                    f"the journal {self.path} could not be written ({exc}); the results since the "
                    f"last commit are not recorded"
                )
            else:
                self._committed += len(group)
            async with self._done:
                self._done.notify_all()

    def _write(self, group: Sequence[tuple[Any, ...]]) -> None:
        with self._write_lock:
            self._writer.execute("BEGIN IMMEDIATE")
            try:
                self._writer.executemany(_UPSERT, group)
            except BaseException:
                self._writer.execute("ROLLBACK")
                raise
            self._writer.execute("COMMIT")

    def flush(self) -> None:
        """Write the queue now, from any thread without a flusher running."""
        group, self._queue = self._queue, []
        if group:
            self._write(group)
            self._committed += len(group)

    async def aclose(self) -> None:
        """Commit what is queued (a flush in progress finishes first) and close."""
        if self._flusher is not None:
            await asyncio.shield(self._flusher)
        self.close()

    def close(self) -> None:
        if self._failure is None:
            self.flush()
        self._reader.close()
        self._writer.close()
        self._lock_file.close()

    # -- provider batches --------------------------------------------------------------------

    def intend_batch(self, name: str, provider: str, item_ids: Sequence[str]) -> None:
        """Commit the intent to create a batch of ``item_ids``, before creating it."""
        now = time.time()
        self._write_now(
            "INSERT INTO batches (name, provider, items, state, created, updated) VALUES (?, ?, ?, ?, ?, ?)",
            (name, provider, json.dumps(list(item_ids)), "intent", now, now),
        )

    def batch_created(self, name: str, batch_id: str) -> None:
        """Commit the provider's id for the batch, right after it was created."""
        self._write_now(
            "UPDATE batches SET batch_id = ?, state = 'created', updated = ? WHERE name = ?",
            (batch_id, time.time(), name),
        )

    def batch_state(self, name: str, state: str) -> None:
        self._write_now(
            "UPDATE batches SET state = ?, updated = ? WHERE name = ?", (state, time.time(), name)
        )

    def batches(self) -> list[BatchRecord]:
        rows = self._reader.execute(
            "SELECT name, provider, items, state, batch_id, created FROM batches ORDER BY created"
        ).fetchall()
        return [BatchRecord(r[0], r[1], json.loads(r[2]), r[3], r[4], r[5]) for r in rows]

    def _write_now(self, sql: str, args: tuple[Any, ...]) -> None:
        with self._write_lock:
            self._writer.execute(sql, args)


def hold_lock(path: Path) -> IO[str]:
    """Hold ``PATH.lock`` for as long as the journal is open; refuse a second process."""
    handle = path.with_name(path.name + ".lock").open("a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        raise ConfigError(
            f"another quorum process is running the job journaled in {path}; wait for it to end, "
            f"or give this run another --journal"
        ) from None
    return handle
