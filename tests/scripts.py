"""Script rules shared by the wire-level tests: one trigger word per injected failure."""

from __future__ import annotations

from typing import Any

ERROR_RULES: list[dict[str, Any]] = [
    {"match": "e429", "error": "rate_limited"},
    {"match": "e529", "error": "overloaded"},
    {"match": "e500", "error": "server_error"},
    {"match": "e400", "error": "bad_request"},
    {"match": "e401", "error": "auth"},
    {"match": "e404", "error": "not_found"},
    {"match": "ereset", "error": "connection"},
    {"match": "ehang", "error": "timeout"},
    {"match": "ebroken", "error": "invalid_reply"},
]
