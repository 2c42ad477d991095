"""``quorum batch --batch-api`` killed with SIGKILL at random moments, then resumed, against
the emulator in a thread of this process (so its batches outlive the killed client)."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import anthropic
import pytest

from quorum.engine.batch_ledger import BatchLedger
from quorum.testing.emulator import Emulator

RULES = [{"match": "please fail", "error": "overloaded"}]


@pytest.fixture
def emulator() -> Iterator[Emulator]:
    with Emulator(script=RULES, batch_time=0.3).in_thread() as emu:
        yield emu


def cli_env(emu: Emulator, tmp_path: Path) -> dict[str, str]:
    """The environment of a ``quorum`` process against ``emu``, its cache under ``tmp_path``."""
    return {
        **os.environ,
        "ANTHROPIC_BASE_URL": emu.anthropic_base_url,
        "ANTHROPIC_API_KEY": "sk-test",
        "QUORUM_CACHE_DIR": str(tmp_path / "cache"),
        "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src"),
    }


def listed_batches(emu: Emulator) -> list[str]:
    client = anthropic.Anthropic(base_url=emu.anthropic_base_url, api_key="k", max_retries=0)
    try:
        return [batch.id for batch in client.messages.batches.list(limit=100)]
    finally:
        client.close()


def test_sigkill_at_random_moments_then_resume_pays_for_each_batch_once(
    tmp_path: Path, emulator: Emulator
) -> None:
    source = tmp_path / "in.jsonl"
    lines = [{"id": f"k{n}", "prompt": "please fail" if n % 25 == 0 else f"q {n}"} for n in range(100)]
    source.write_text("".join(json.dumps(x) + "\n" for x in lines))
    out = tmp_path / "out.jsonl"
    env = cli_env(emulator, tmp_path)
    command = [sys.executable, "-m", "quorum.cli.main", "batch", str(source), "-o", str(out)]
    command += ["-m", "anthropic/claude-haiku-4-5", "--batch-api", "--poll", "0.05", "--no-cache"]
    rng = random.Random(5)
    kills = 0
    for _ in range(3):
        process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(0.8, 2.0))
        if process.poll() is None:
            process.send_signal(signal.SIGKILL)
            kills += 1
        process.wait()
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 1, done.stderr  # the four "please fail" lines fail after 3 batches
    records = [json.loads(x) for x in out.read_text().splitlines()]
    assert [r["custom_id"] for r in records] == [f"k{n}" for n in range(100)]  # each once, in order
    assert Counter(r["status"] for r in records) == {"ok": 96, "error": 4}
    with BatchLedger(Path(str(out) + ".journal")) as ledger:
        claimed = ledger.claimed()
    created = listed_batches(emulator)
    assert set(created) == claimed  # every batch created is owned by one journaled intent
    assert emulator.stats.batches_created == len(created) == 3  # the job, then the 4 twice more
    assert emulator.stats.batch_items == 100 + 4 + 4  # the item set went out once
    assert kills >= 1


def test_ctrl_c_detaches_says_how_to_resume_and_the_resume_collects(tmp_path: Path) -> None:
    source = tmp_path / "in.jsonl"
    source.write_text("".join(json.dumps({"id": f"k{n}", "prompt": f"q {n}"}) + "\n" for n in range(5)))
    out = tmp_path / "out.jsonl"
    with Emulator(batch_time=3.0).in_thread() as emu:
        env = cli_env(emu, tmp_path)
        command = [sys.executable, "-m", "quorum.cli.main", "batch", str(source), "-o", str(out)]
        command += ["-m", "anthropic/claude-haiku-4-5", "--batch-api", "--poll", "0.05"]
        process = subprocess.Popen(command, env=env, stderr=subprocess.PIPE, text=True)
        waited = time.monotonic() + 60
        while not emu.stats.batches_created and time.monotonic() < waited:  # a slow start under load
            time.sleep(0.02)
        assert emu.stats.batches_created == 1
        process.send_signal(signal.SIGINT)  # Ctrl-C once, while the batch runs
        _, said = process.communicate(timeout=60)
        assert process.returncode == 130, said
        assert "detaching: the batches keep running at the provider" in said
        assert "to resume" in said
        assert not out.exists()  # incomplete: only OUTPUT.partial
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert [json.loads(x)["custom_id"] for x in out.read_text().splitlines()] == [f"k{n}" for n in range(5)]
    assert emu.stats.batches_created == 1  # the resume collected the detached batch
