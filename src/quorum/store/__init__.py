"""Durability: the response cache and the job journal (SQLite, standard library).

``ResponseCache`` keeps replies by request, shared by every process on the machine;
``Journal`` keeps one job's items by id, so a job killed at any moment resumes without
paying twice for what had finished. ``quorum.engine.jobs.journaled`` runs a job through
a journal (it sits above the engine; this layer sits below it).
"""

from quorum.store.cache import Cached, CacheHit, ResponseCache, request_key
from quorum.store.journal import Journal, JournalMismatch

__all__ = [
    "CacheHit",
    "Cached",
    "Journal",
    "JournalMismatch",
    "ResponseCache",
    "request_key",
]
