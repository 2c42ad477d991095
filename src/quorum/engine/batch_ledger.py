"""The batch part of a job's journal: intents, batch ids and each item's one result.

Every step of a batch's life is committed before the next begins, so a process killed
at any moment leaves a record a re-run can finish from:

- an **intent** (a tag, the job, its custom_ids, the wall time) is written before ``create``;
- the **batch id** is written the moment ``create`` returns; an intent without one is
  looked up at the provider (the batch may exist: an orphan) before anything is created;
- each item's **result** is inserted once (``INSERT OR IGNORE`` on its custom_id), so a
  download repeated after a kill writes nothing twice;
- the intent is **closed** once all its results are read; items that errored or expired
  go back to pending with one more attempt counted.

SQLite from the standard library, in WAL mode; the tables are prefixed ``batch_`` so
they can share a file with the job journal.
"""

from __future__ import annotations

import json
import sqlite3
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from quorum.llm.batches.base import Intent

_SCHEMA = """
CREATE TABLE IF NOT EXISTS batch_intents (
    tag TEXT PRIMARY KEY, job_id TEXT NOT NULL, provider TEXT NOT NULL,
    custom_ids TEXT NOT NULL, written_at REAL NOT NULL,
    batch_id TEXT, state TEXT NOT NULL DEFAULT 'intended'
);
CREATE TABLE IF NOT EXISTS batch_results (
    custom_id TEXT PRIMARY KEY, job_id TEXT NOT NULL, ok INTEGER NOT NULL,
    record TEXT NOT NULL, via TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS batch_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS batch_attempts (
    custom_id TEXT NOT NULL, job_id TEXT NOT NULL, attempts INTEGER NOT NULL,
    PRIMARY KEY (custom_id, job_id)
);
"""


@dataclass(frozen=True, slots=True)
class OpenIntent:
    """An intent not yet closed: ``batch_id`` is ``None`` if ``create`` may not have run."""

    intent: Intent
    provider: str
    batch_id: str | None


class BatchLedger:
    """One job's batch records in the SQLite file at ``path`` (created if missing).

    ``job_id`` names the job at the provider (OpenAI batch metadata, intent tags); without
    one, the file's own id is used, made once at random, so two jobs never share one."""

    def __init__(self, path: str | Path, job_id: str | None = None) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(self.path, isolation_level=None, timeout=30.0)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")  # a commit survives a killed process
        self._db.executescript(_SCHEMA)
        self.job_id = job_id or self._own_id()

    def _own_id(self) -> str:
        fresh = "q" + uuid.uuid4().hex[:20]
        self._db.execute("INSERT OR IGNORE INTO batch_meta (key, value) VALUES ('job_id', ?)", (fresh,))
        row = self._db.execute("SELECT value FROM batch_meta WHERE key = 'job_id'").fetchone()
        return str(row[0])

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> BatchLedger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- intents and ids ----------------------------------------------------------------

    def write_intent(self, intent: Intent, provider: str) -> None:
        self._db.execute(
            "INSERT INTO batch_intents (tag, job_id, provider, custom_ids, written_at) VALUES (?,?,?,?,?)",
            (intent.tag, self.job_id, provider, json.dumps(intent.custom_ids), intent.written_at),
        )

    def record_batch(self, tag: str, batch_id: str) -> None:
        self._db.execute(
            "UPDATE batch_intents SET batch_id = ?, state = 'submitted' WHERE tag = ?", (batch_id, tag)
        )

    def open_intents(self) -> list[OpenIntent]:
        rows = self._db.execute(
            "SELECT tag, provider, custom_ids, written_at, batch_id FROM batch_intents "
            "WHERE job_id = ? AND state IN ('intended', 'submitted') ORDER BY written_at, tag",
            (self.job_id,),
        ).fetchall()
        return [
            OpenIntent(Intent(self.job_id, tag, tuple(json.loads(ids)), written), provider, batch_id)
            for tag, provider, ids, written, batch_id in rows
        ]

    def claimed(self) -> frozenset[str]:
        """Every batch id some intent owns (of any job): never adopted as another's orphan."""
        rows = self._db.execute("SELECT batch_id FROM batch_intents WHERE batch_id IS NOT NULL")
        return frozenset(row[0] for row in rows)

    def intents_written(self) -> int:
        row = self._db.execute("SELECT COUNT(*) FROM batch_intents WHERE job_id = ?", (self.job_id,))
        return int(row.fetchone()[0])

    def close_intent(self, tag: str, retry: Iterable[str]) -> None:
        """The intent's results are all read; ``retry`` items go back to pending."""
        with self._transaction():
            for custom_id in retry:
                self._db.execute(
                    "INSERT INTO batch_attempts (custom_id, job_id, attempts) VALUES (?, ?, 1) "
                    "ON CONFLICT (custom_id, job_id) DO UPDATE SET attempts = attempts + 1",
                    (custom_id, self.job_id),
                )
            self._db.execute("UPDATE batch_intents SET state = 'closed' WHERE tag = ?", (tag,))

    def attempts(self, custom_id: str) -> int:
        row = self._db.execute(
            "SELECT attempts FROM batch_attempts WHERE custom_id = ? AND job_id = ?",
            (custom_id, self.job_id),
        ).fetchone()
        return int(row[0]) if row else 0

    # --- results ------------------------------------------------------------------------

    def record_results(self, rows: Sequence[tuple[object, bool, dict[str, Any]]]) -> set[str]:
        """Store final results ``(custom_id, ok, record)`` in one commit; the ids that were
        new (an id that already has a result keeps it: nothing is written twice)."""
        new: set[str] = set()
        with self._transaction():
            for custom_id, ok, record in rows:
                cursor = self._db.execute(
                    "INSERT OR IGNORE INTO batch_results (custom_id, job_id, ok, record, via) "
                    "VALUES (?,?,?,?,?)",
                    (str(custom_id), self.job_id, int(ok), json.dumps(record), str(record.get("via"))),
                )
                if cursor.rowcount == 1:
                    new.add(str(custom_id))
        return new

    def finished(self) -> set[str]:
        rows = self._db.execute("SELECT custom_id FROM batch_results WHERE job_id = ?", (self.job_id,))
        return {row[0] for row in rows}

    def results(self, custom_ids: Sequence[str] | None = None) -> dict[str, dict[str, Any]]:
        """Final results by custom_id (all of the job's, or those asked for)."""
        rows = self._db.execute(
            "SELECT custom_id, record FROM batch_results WHERE job_id = ?", (self.job_id,)
        )
        found = {cid: json.loads(record) for cid, record in rows}
        return found if custom_ids is None else {c: found[c] for c in custom_ids if c in found}

    def forget(self) -> None:
        """Drop the job's batch records (``--restart``); the caller checks none is open."""
        with self._transaction():
            for table in ("batch_intents", "batch_results", "batch_attempts"):
                self._db.execute(f"DELETE FROM {table} WHERE job_id = ?", (self.job_id,))  # nosec B608: fixed names

    def _transaction(self) -> _Tx:
        return _Tx(self._db)


class _Tx:
    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    def __enter__(self) -> None:
        self._db.execute("BEGIN IMMEDIATE")

    def __exit__(self, kind: object, *rest: object) -> None:
        self._db.execute("COMMIT" if kind is None else "ROLLBACK")
