"""Shared helpers for the benchmarks.

Peak memory is measured honestly: every measured variant runs in a fresh Python process
of its own, which reports ``resource.getrusage(RUSAGE_SELF).ru_maxrss`` (its own peak
resident set, nothing inherited from the parent) along with its figures on the last line
of its standard output, as JSON.

The emulator, when a benchmark needs one, also runs in a process of its own
(``python bench/_common.py serve-emulator '<options as JSON>'``), so that serving the
requests does not take CPU from the client being measured inside one event loop. It
prints its port, serves until its standard input closes, then prints its statistics.
"""

from __future__ import annotations

import asyncio
import json
import os
import platform
import resource
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
MB = 1024.0  # ru_maxrss is in KiB on Linux


def peak_rss_mb() -> float:
    """This process's peak resident set size, in MiB."""
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / MB, 1)


def child_result(figures: dict[str, Any]) -> None:
    """Print a child's figures (with its peak memory) as the last line of its output."""
    figures["peak_rss_mb"] = peak_rss_mb()
    print(json.dumps(figures), flush=True)


def run_child(script: str, args: Sequence[str], *, timeout: float = 900.0) -> dict[str, Any]:
    """Run ``python script *args`` in a fresh process and return the JSON it printed last."""
    command = [sys.executable, script, *args]
    done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        raise RuntimeError(
            f"{' '.join(command)} failed with exit code {done.returncode}:\n{done.stderr[-4000:]}"
        )
    result: dict[str, Any] = json.loads(lines[-1])
    return result


def machine() -> dict[str, Any]:
    """Where the figures were measured."""
    return {
        "date": datetime.now(UTC).strftime("%Y-%m-%d"),
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "platform": platform.platform(terse=True),
    }


def emit(result: dict[str, Any], as_json: bool, title: str) -> None:
    """One JSON object with ``--json``; an aligned table for people otherwise."""
    if as_json:
        print(json.dumps(result, sort_keys=False))
        return
    print(title)
    width = max(len(k) for k in result)
    for key, value in result.items():
        shown = json.dumps(value) if isinstance(value, (dict, list)) else value
        print(f"  {key:<{width}}  {shown}")


class Timer:
    """Wall and CPU seconds of a block."""

    def __enter__(self) -> Timer:
        self._wall = time.perf_counter()
        self._cpu = time.process_time()
        return self

    def __exit__(self, *exc: object) -> None:
        self.wall_s = time.perf_counter() - self._wall
        self.cpu_s = time.process_time() - self._cpu


class KeepNothing(list[Any]):
    """A list that keeps nothing: ``FakeProvider(calls=KeepNothing())`` stops the fake
    from recording every request, which would make its memory grow with the task count."""

    def append(self, item: Any) -> None:
        return None


# -- the emulator in its own process -------------------------------------------------------------


class EmulatorProcess:
    """A running emulator subprocess: ``url`` to reach it, ``stats`` once it stopped."""

    def __init__(self, process: subprocess.Popen[str], port: int) -> None:
        self.process = process
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.stats: dict[str, Any] = {}


@contextmanager
def emulator_process(**options: Any) -> Iterator[EmulatorProcess]:
    """Start ``Emulator(**options)`` in a subprocess; stop it (and collect its stats) on exit."""
    command = [sys.executable, str(Path(__file__)), "serve-emulator", json.dumps(options)]
    process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=ROOT)
    assert process.stdout is not None
    assert process.stdin is not None
    first = process.stdout.readline()
    if not first.startswith("port "):
        process.kill()
        raise RuntimeError(f"the emulator did not start: {first!r}")
    handle = EmulatorProcess(process, int(first.split()[1]))
    try:
        yield handle
    finally:
        process.stdin.close()  # the emulator stops, prints its statistics and exits
        out = process.stdout.read()
        process.wait(timeout=30)
        lines = out.strip().splitlines()
        handle.stats = json.loads(lines[-1]) if lines else {}


async def _serve(options: dict[str, Any]) -> None:
    from quorum.testing.emulator import Emulator

    async with Emulator(**options) as emu:
        print(f"port {emu.port}", flush=True)
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, sys.stdin.read)  # until the parent closes stdin
        stats = emu.stats.as_dict()
    stats["peak_rss_mb"] = peak_rss_mb()
    print(json.dumps(stats), flush=True)


if __name__ == "__main__" and sys.argv[1:2] == ["serve-emulator"]:
    asyncio.run(_serve(json.loads(sys.argv[2])))
