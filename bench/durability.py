"""``quorum batch`` killed with SIGKILL at random moments: what is lost, duplicated, paid twice.

A JSONL of ``--items`` requests runs against the emulator (with latency) in a
subprocess, which is killed ``--kills`` times at a random moment while it writes, and
run again until it finishes; then once more. The response cache is off (``--no-cache``),
so every call the journal fails to save shows up as an extra request.

* ``lost``, ``duplicated``: custom_ids missing from, or repeated in, the final output;
* ``extra_calls``: requests the emulator received beyond one per item;
* ``extra_calls_bound``: ``kills x concurrency``, the most the kills may cost (the calls
  in flight at each kill);
* ``rerun_calls``: requests made by one more run after the job was done;
* ``commit_ms_median``, ``commit_ms_p99``: in a separate measure, how long a result waits
  for the journal commit that holds it, with ``--concurrency`` workers recording at once
  (the allowance is 100 ms).

Targets: 0, 0, within the bound, 0.

    python bench/durability.py [--json] [--items N] [--kills K] [--concurrency C] [--seed S]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

from _common import ROOT, emit, machine
from quorum.store.journal import Journal
from quorum.testing.emulator import Emulator

MESSAGES = "/v1/messages"


def command(folder: Path, concurrency: int) -> list[str]:
    return [
        sys.executable,
        "-m",
        "quorum.cli.main",
        "batch",
        str(folder / "in.jsonl"),
        "-o",
        str(folder / "out.jsonl"),
        "--model",
        "anthropic/claude-haiku-4-5",
        "--concurrency",
        str(concurrency),
        "--no-cache",
    ]


def kill_once(cmd: list[str], env: dict[str, str], partial: Path, rng: random.Random, window: float) -> bool:
    """Start the job and SIGKILL it a random moment after it starts writing; False if it
    ended first."""
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    while proc.poll() is None and not (partial.exists() and partial.stat().st_size > 0):
        time.sleep(0.005)
    time.sleep(rng.uniform(0.0, window))
    if proc.poll() is not None:
        return False
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    return True


def trial(items: int, kills: int, concurrency: int, seed: int, window: float) -> dict[str, Any]:
    rng = random.Random(seed)
    with tempfile.TemporaryDirectory() as name, Emulator(latency="uniform:0.01,0.04").in_thread() as emu:
        folder = Path(name)
        with (folder / "in.jsonl").open("w") as f:
            for i in range(items):
                f.write(json.dumps({"id": f"r{i}", "prompt": f"question {i}", "max_tokens": 16}) + "\n")
        env = {**os.environ, **emu.env(), "PYTHONPATH": str(ROOT / "src"), "QUORUM_CACHE_DIR": name}
        cmd = command(folder, concurrency)
        landed = sum(kill_once(cmd, env, folder / "out.jsonl.partial", rng, window) for _ in range(kills))
        started = time.perf_counter()
        subprocess.run(cmd, env=env, capture_output=True, check=False)
        last_run_s = time.perf_counter() - started
        paid = emu.stats.count(path=MESSAGES)
        ids = Counter(
            json.loads(line)["custom_id"] for line in (folder / "out.jsonl").read_text().splitlines()
        )
        subprocess.run(cmd, env=env, capture_output=True, check=False)
        rerun = emu.stats.count(path=MESSAGES) - paid
    expected = {f"r{i}" for i in range(items)}
    return {
        "items": items,
        "kills": landed,
        "concurrency": concurrency,
        "lost": len(expected - set(ids)),
        "duplicated": sum(n - 1 for n in ids.values() if n > 1),
        "extra_calls": paid - items,
        "extra_calls_bound": landed * concurrency,
        "rerun_calls": rerun,
        "last_run_s": round(last_run_s, 2),
    }


async def commit_latency(workers: int, per_worker: int, folder: Path) -> dict[str, float]:
    """Milliseconds from ``record`` to ``committed`` with ``workers`` recording at once."""
    journal = Journal(folder / "latency.journal")
    waits: list[float] = []

    async def worker(w: int) -> None:
        for i in range(per_worker):
            started = time.perf_counter()
            seq = journal.record(f"{w}-{i}", "fingerprint", "ok", result={"text": "x" * 200})
            await journal.committed(seq)
            waits.append(time.perf_counter() - started)

    await asyncio.gather(*(worker(w) for w in range(workers)))
    await journal.aclose()
    waits.sort()
    return {
        "commit_ms_median": round(statistics.median(waits) * 1000, 2),
        "commit_ms_p99": round(waits[int(len(waits) * 0.99)] * 1000, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--items", type=int, default=5000)
    parser.add_argument("--kills", type=int, default=6)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--window", type=float, default=1.5, help="seconds after the first write to kill within"
    )
    args = parser.parse_args()
    figures = trial(args.items, args.kills, args.concurrency, args.seed, args.window)
    with tempfile.TemporaryDirectory() as folder:
        figures.update(asyncio.run(commit_latency(args.concurrency, 200, Path(folder))))
    figures["machine"] = machine()
    emit(figures, args.json, "durability: quorum batch under SIGKILL")


if __name__ == "__main__":
    main()
