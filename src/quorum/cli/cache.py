"""``quorum cache stats | clear | prune --older-than 30d``: the response cache on this machine.

The cache is ``$QUORUM_CACHE_DIR/responses.sqlite3``, else in the user's XDG cache
directory (``~/.cache/quorum``); see ``quorum.store.cache``.
"""

from __future__ import annotations

import json
import re
from typing import Annotated

import typer

from quorum.cli.common import fail, stderr
from quorum.store.cache import ResponseCache

app = typer.Typer(help="The response cache: stats, clear, prune.", no_args_is_help=True)

UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_age(text: str) -> float:
    """``30d``, ``12h``, ``90m``, ``2w`` or plain seconds, as seconds."""
    found = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*", text)
    if found is None:
        raise ValueError(f"--older-than {text!r}: give a number and a unit, e.g. 30d, 12h, 90m, 2w")
    return float(found.group(1)) * UNITS[found.group(2) or "s"]


def _open() -> ResponseCache:
    cache = ResponseCache()
    if not cache.path.exists():
        stderr.print(f"[dim]no cache yet at {cache.path}[/dim]")
    return cache


@app.command("stats")
def stats(json_output: Annotated[bool, typer.Option("--json", help="Write JSON.")] = False) -> None:
    """Where the cache is, how many answers it holds, and what its hits saved."""
    cache = _open()
    figures = cache.stats()
    if json_output:
        print(json.dumps(figures))
        return
    if not figures["working"]:
        fail(f"the cache {figures['path']} cannot be used: {figures['problem']}", code=1)
    print(f"path     {figures['path']}")
    print(f"entries  {figures['entries']:,}")
    print(f"size     {figures['bytes'] / 1e6:.1f} MB")
    print(f"hits     {figures['hits']:,} (${figures['saved']:.2f} not spent)")


@app.command("clear")
def clear() -> None:
    """Delete every cached answer."""
    gone = _open().clear()
    print(f"deleted {gone:,} cached answers")


@app.command("prune")
def prune(
    older_than: Annotated[
        str, typer.Option("--older-than", help="Delete answers not used for this long: 30d, 12h, 90m, 2w.")
    ],
) -> None:
    """Delete the answers not used for a while."""
    try:
        seconds = parse_age(older_than)
    except ValueError as exc:
        fail(str(exc))
    gone = _open().prune(older_than_s=seconds)
    print(f"deleted {gone:,} cached answers not used for {older_than}")
