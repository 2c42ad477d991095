"""``quorum batch`` killed with SIGKILL at random moments, run again until done.

Against the emulator (with latency), in a subprocess: every custom_id ends up in the
output exactly once, the emulator answered at most ``items + kills x concurrency``
requests (a kill costs at most the calls in flight), and one more run makes no request.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from quorum.testing.emulator import Emulator

ITEMS = 2000
CONCURRENCY = 16
KILLS = 4
MESSAGES = "/v1/messages"


def batch_command(tmp: Path) -> list[str]:
    return [
        sys.executable,
        "-m",
        "quorum.cli.main",
        "batch",
        str(tmp / "in.jsonl"),
        "-o",
        str(tmp / "out.jsonl"),
        "--model",
        "anthropic/claude-haiku-4-5",
        "--concurrency",
        str(CONCURRENCY),
    ]


def write_input(path: Path, n: int) -> None:
    with path.open("w") as f:
        for i in range(n):
            f.write(json.dumps({"id": f"r{i}", "prompt": f"question number {i}", "max_tokens": 16}) + "\n")


def environment(emu: Emulator, tmp: Path) -> dict[str, str]:
    src = str(Path(__file__).resolve().parents[1] / "src")
    return {
        **os.environ,
        **emu.env(),
        "PYTHONPATH": src,
        "QUORUM_CACHE_DIR": str(tmp / "cache"),
    }


def run_and_kill(command: list[str], env: dict[str, str], partial: Path, rng: random.Random) -> bool:
    """Start the job; SIGKILL it a random moment after it began writing. False if it
    finished before the kill landed."""
    proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    started = time.monotonic()
    while proc.poll() is None and not (partial.exists() and partial.stat().st_size > 0):
        if time.monotonic() - started > 30:
            proc.kill()
            pytest.fail("the batch never started writing")
        time.sleep(0.01)
    time.sleep(rng.uniform(0.0, 0.8))
    if proc.poll() is not None:
        return False
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    return True


def read_ids(path: Path) -> list[str]:
    return [json.loads(line)["custom_id"] for line in path.read_text().splitlines()]


@pytest.mark.timeout(120)
def test_killed_at_random_moments_every_item_once_and_no_call_paid_twice_beyond_the_bound(
    tmp_path: Path,
) -> None:
    write_input(tmp_path / "in.jsonl", ITEMS)
    rng = random.Random(20261201)
    with Emulator(latency="uniform:0.01,0.04").in_thread() as emu:
        env = environment(emu, tmp_path)
        command = batch_command(tmp_path)
        kills = sum(run_and_kill(command, env, tmp_path / "out.jsonl.partial", rng) for _ in range(KILLS))
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60, check=False)
        assert done.returncode == 0, done.stderr
        paid = emu.stats.count(path=MESSAGES)

        ids = read_ids(tmp_path / "out.jsonl")
        assert len(ids) == ITEMS
        assert set(ids) == {f"r{i}" for i in range(ITEMS)}
        assert kills >= 2, "the kills must land while the job runs"
        assert ITEMS <= paid <= ITEMS + kills * CONCURRENCY

        again = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60, check=False)
        assert again.returncode == 0, again.stderr
        assert emu.stats.count(path=MESSAGES) == paid
        assert sorted(read_ids(tmp_path / "out.jsonl")) == sorted(ids)
        print(f"kills={kills} paid={paid} bound={ITEMS + kills * CONCURRENCY}")
