"""``quorum batch --ray`` on a local cluster against the emulator: the calls on the
workers, the journal and the cache at the driver, a SIGKILLed driver resumed from its
journal, and the one-line errors for a missing extra and an unreachable address."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from quorum.cli.main import app
from quorum.testing.emulator import Emulator
from ray_cluster import UnstartableExecutor, local_cluster

MODEL = "anthropic/claude-haiku-4-5"
SRC = str(Path(__file__).resolve().parents[1] / "src")


@pytest.fixture(scope="module")
def emulator() -> Iterator[Emulator]:
    with Emulator(latency=0.3).in_thread() as emu:
        yield emu


@pytest.fixture(scope="module")
def cluster(emulator: Emulator) -> Iterator[str]:
    with local_cluster(emulator) as address:
        yield address


def write_lines(path: Path, count: int) -> Path:
    path.write_text("".join(json.dumps({"id": f"s{i}", "prompt": f"q {i}"}) + "\n" for i in range(count)))
    return path


def results(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def calls(emu: Emulator) -> int:
    return emu.stats.count(path="/v1/messages")


def settle(emu: Emulator, quiet_s: float = 1.5, within_s: float = 30.0) -> None:
    """Until no call is out and none has arrived for ``quiet_s``: Ray ends a dead driver's
    workers only once it notices, and until then they send the items they hold."""
    deadline = time.monotonic() + within_s
    seen, since = calls(emu), time.monotonic()
    while time.monotonic() < deadline:
        time.sleep(0.05)
        now = calls(emu)
        if now != seen or emu.stats.in_flight:
            seen, since = now, time.monotonic()
        elif time.monotonic() - since >= quiet_s:
            return


def one_line(text: str) -> str:
    return " ".join(text.split())  # rich wraps long lines


def test_a_missing_extra_is_one_line_and_exit_2(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # what `import ray` sees without the extra
    source = write_lines(tmp_path / "in.jsonl", 1)
    done = CliRunner().invoke(
        app, ["batch", str(source), "-o", str(tmp_path / "o.jsonl"), "-m", "fake", "--ray"]
    )
    assert done.exit_code == 2
    assert "pip install 'quorum[ray]'" in one_line(done.stderr)
    assert len(done.stderr.strip().splitlines()) <= 2  # one line, wrapped at most once by the terminal


def test_an_unreachable_address_is_one_line_and_exit_2(tmp_path: Path) -> None:
    pytest.importorskip("ray")
    source = write_lines(tmp_path / "in.jsonl", 1)
    started = time.monotonic()
    done = CliRunner().invoke(
        app,
        [
            "batch",
            str(source),
            "-o",
            str(tmp_path / "o.jsonl"),
            "-m",
            "fake",
            "--ray",
            "--ray-address",
            "127.0.0.1:9",
        ],
    )
    assert done.exit_code == 2
    assert "no Ray cluster answers at '127.0.0.1:9'" in one_line(done.stderr)
    assert time.monotonic() - started < 5
    assert not (tmp_path / "o.jsonl.journal").exists()  # refused before any work


def test_ray_options_without_ray_are_refused(tmp_path: Path) -> None:
    source = write_lines(tmp_path / "in.jsonl", 1)
    done = CliRunner().invoke(app, ["batch", str(source), "-o", str(tmp_path / "o.jsonl"), "--workers", "3"])
    assert done.exit_code == 2
    assert "go with --ray" in done.stderr


@pytest.mark.ray
def test_batch_on_the_cluster_resumes_from_the_journal_and_reads_the_cache(
    cluster: str, emulator: Emulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in emulator.env().items():
        monkeypatch.setenv(name, value)
    source = write_lines(tmp_path / "in.jsonl", 20)
    out = tmp_path / "out.jsonl"
    command = [
        "batch",
        str(source),
        "-o",
        str(out),
        "-m",
        MODEL,
        "-c",
        "4",
        "--ray",
        "--workers",
        "2",
        "--json",
    ]
    before = calls(emulator)
    done = CliRunner().invoke(app, command)
    assert done.exit_code == 0, done.stderr
    assert sorted(r["custom_id"] for r in results(out)) == sorted(f"s{i}" for i in range(20))
    assert all(r["status"] == "ok" and r["text"] for r in results(out))
    assert calls(emulator) - before == 20
    summary = json.loads(done.stdout)
    assert summary["calls"] == 20  # the workers' calls, counted at the driver

    again = CliRunner().invoke(app, command)  # everything is in the journal
    assert again.exit_code == 0, again.stderr
    assert json.loads(again.stdout)["resumed"] == 20
    fresh = CliRunner().invoke(app, [*command, "--restart"])  # the journal forgotten: the cache answers
    assert fresh.exit_code == 0, fresh.stderr
    assert json.loads(fresh.stdout)["cache_hits"] == 20
    assert all(r["cached"] for r in results(out))
    assert calls(emulator) - before == 20  # neither run sent anything


def journaled_ok(journal: Path) -> int:
    """The answers the journal holds (0 before the driver has made it)."""
    if not journal.exists():
        return 0
    db = sqlite3.connect(journal, timeout=5)
    try:
        return int(db.execute("SELECT count(*) FROM items WHERE status = 'ok'").fetchone()[0])
    except sqlite3.OperationalError:  # the file is there, its tables not yet
        return 0
    finally:
        db.close()


@pytest.mark.ray
@pytest.mark.timeout(360)
def test_a_sigkilled_driver_resumes_from_its_journal_each_id_once(
    cluster: str, emulator: Emulator, tmp_path: Path
) -> None:
    source = write_lines(tmp_path / "in.jsonl", 60)
    out = tmp_path / "out.jsonl"
    env = {**os.environ, **emulator.env(), "PYTHONPATH": SRC, "QUORUM_CACHE_DIR": str(tmp_path / "cache")}
    command = [sys.executable, "-m", "quorum.cli.main", "batch", str(source), "-o", str(out), "-m", MODEL]
    command += ["-c", "2", "--no-cache", "--ray", "--ray-address", cluster, "--workers", "2"]
    journal = Path(str(out) + ".journal")
    before = calls(emulator)
    driver = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    # Killed once answers are journaled: calls seen at the emulator may not have reached the
    # driver yet. Idle, the first call goes out after 5 s; with two CPU burners on two cores,
    # after 72 s (the workers import the SDK at 5% of a core each).
    deadline = time.monotonic() + 180
    while journaled_ok(journal) < 4 and time.monotonic() < deadline and driver.poll() is None:
        time.sleep(0.02)
    driver.send_signal(signal.SIGKILL)
    _, stderr = driver.communicate(timeout=30)
    assert driver.returncode == -signal.SIGKILL, stderr
    settle(emulator)  # the killed driver's workers end with it; the calls they had out land
    kept = journaled_ok(journal)
    assert 0 < kept < 60, stderr
    paid = calls(emulator) - before

    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=180, check=False)
    assert done.returncode == 0, done.stderr
    ids = Counter(r["custom_id"] for r in results(out))
    assert ids == Counter(f"s{i}" for i in range(60))  # every id exactly once
    assert calls(emulator) - before - paid == 60 - kept  # nothing journaled was paid again


def test_workers_that_cannot_start_stop_the_job_in_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("ray")
    monkeypatch.setattr("quorum.engine.cluster.RayExecutor", UnstartableExecutor)
    source = write_lines(tmp_path / "in.jsonl", 5)
    out = tmp_path / "o.jsonl"
    done = CliRunner().invoke(app, ["batch", str(source), "-o", str(out), "-m", "fake", "--ray"])
    assert done.exit_code == 2
    assert one_line(done.stderr).count("cannot import quorum") == 1  # said once, not per line
    assert not out.exists()  # no output pretends to be complete
