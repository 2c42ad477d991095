"""``quorum moderate --ray`` and ``quorum eval review --ray`` on a local cluster against
the emulator: the same verdicts and scores as the online run, the calls made by the
workers; and the one-line errors for an unreachable address, for workers that cannot
start, and for ``--ray`` with ``--batch-api``."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from quorum.cli.main import app
from quorum.testing.emulator import Emulator
from ray_cluster import UnstartableExecutor, local_cluster
from test_cli_eval_journal import SQL

MODEL = "anthropic/claude-haiku-4-5"
RULES = [
    {"match": "rocks for brains", "data": {"decision": "rejected", "confidence": "high"}},
    {"match": "Classify the following", "data": {"decision": "acceptable", "confidence": "high"}},
    {"match": ".", "data": SQL},
]
CODE = "def f(x):\n    query = 'SELECT ' + x\n    return run(query)\n"


@pytest.fixture(scope="module")
def emulator() -> Iterator[Emulator]:
    with Emulator(script=RULES).in_thread() as emu:
        yield emu


@pytest.fixture(scope="module")
def cluster(emulator: Emulator) -> Iterator[str]:
    with local_cluster(emulator) as address:
        yield address


@pytest.fixture
def online(emulator: Emulator, monkeypatch: pytest.MonkeyPatch) -> Emulator:
    for name, value in emulator.env().items():
        monkeypatch.setenv(name, value)
    return emulator


def texts(path: Path) -> Path:
    lines = [{"id": f"t{i}", "text": "You have rocks for brains" if i % 3 else "Nice post"} for i in range(9)]
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return path


def cases(path: Path) -> Path:
    rows = []
    for pair in range(3):
        for side in ("before", "after"):
            labels = [{"cwe": "CWE-89", "line": 2}] if side == "before" else []
            row = {"id": f"p{pair}{side[0]}", "pair": f"p{pair}", "side": side, "code": CODE}
            rows.append(row | {"vulnerable_lines": labels})
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def one_line(text: str) -> str:
    return " ".join(text.split())  # rich wraps long lines


def verdicts(stdout: str) -> dict[str, tuple[str, Any]]:
    return {v["id"]: (v["status"], v["verdict"]) for v in map(json.loads, stdout.splitlines())}


MODERATE = ["moderate", "-m", MODEL, "--no-cache", "-c", "4"]
EVAL = ["eval", "review", "-m", MODEL, "--reviewers", "2", "--no-cache", "--json"]


def arguments(command: str, tmp_path: Path) -> list[str]:
    """The command on its data, on one machine."""
    if command == "moderate":
        return [*MODERATE, "--input", str(texts(tmp_path / "in.jsonl"))]
    return [*EVAL[:2], str(cases(tmp_path / "cases.jsonl")), *EVAL[2:]]


@pytest.fixture
def dispatched(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The calls each remote connection sent to a worker, noted as it closes."""
    from quorum.engine.cluster.remote import RemoteConnection

    sent: list[int] = []
    close = RemoteConnection.aclose

    async def noting(self: RemoteConnection) -> None:
        sent.append(self.dispatched)
        await close(self)

    monkeypatch.setattr(RemoteConnection, "aclose", noting)
    return sent


@pytest.mark.ray
def test_moderate_on_the_cluster_gives_the_online_verdicts(
    cluster: str, online: Emulator, dispatched: list[int], tmp_path: Path
) -> None:
    args = arguments("moderate", tmp_path)
    here = CliRunner().invoke(app, args)
    assert here.exit_code == 0, here.stderr
    before = online.stats.count(path="/v1/messages")
    there = CliRunner().invoke(app, [*args, "--ray", "--workers", "2"])
    assert there.exit_code == 0, there.stderr
    assert verdicts(there.stdout) == verdicts(here.stdout)
    assert {v for _, v in verdicts(there.stdout).values()} == {"acceptable", "rejected"}
    assert online.stats.count(path="/v1/messages") - before == 9 * 5
    assert dispatched == [9 * 5]  # every vote, sent to the workers


@pytest.mark.ray
def test_eval_review_on_the_cluster_gives_the_online_scores(
    cluster: str, online: Emulator, dispatched: list[int], tmp_path: Path
) -> None:
    args = arguments("eval", tmp_path)
    here = CliRunner().invoke(app, args)
    assert here.exit_code == 0, here.stderr
    before = online.stats.count(path="/v1/messages")
    there = CliRunner().invoke(app, [*args, "--ray", "--workers", "2"])
    assert there.exit_code == 0, there.stderr
    assert json.loads(there.stdout)["thresholds"] == json.loads(here.stdout)["thresholds"]
    assert json.loads(there.stdout)["summary"]["calls"] == 6 * 2  # the workers' calls, counted here
    assert online.stats.count(path="/v1/messages") - before == 6 * 2
    assert dispatched == [6 * 2]  # every reviewer's call, sent to the workers


@pytest.mark.parametrize("command", ["moderate", "eval"])
def test_an_unreachable_address_is_one_line_and_exit_2(command: str, tmp_path: Path) -> None:
    pytest.importorskip("ray")
    args = arguments(command, tmp_path)
    started = time.monotonic()
    done = CliRunner().invoke(app, [*args, "--ray", "--ray-address", "127.0.0.1:9"])
    assert done.exit_code == 2
    assert "no Ray cluster answers at '127.0.0.1:9'" in one_line(done.stderr)
    assert len(done.stderr.strip().splitlines()) <= 2
    assert time.monotonic() - started < 5


@pytest.mark.parametrize("command", ["moderate", "eval"])
def test_ray_with_the_batch_api_is_refused(command: str, tmp_path: Path) -> None:
    args = arguments(command, tmp_path)
    done = CliRunner().invoke(app, [*args, "--batch-api", "--ray"])
    assert done.exit_code == 2
    assert "does not go with --batch-api" in one_line(done.stderr)


@pytest.mark.parametrize("command", ["moderate", "eval"])
def test_workers_that_cannot_start_stop_the_command_in_one_line(
    command: str, tmp_path: Path, online: Emulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("quorum.engine.cluster.RayExecutor", UnstartableExecutor)
    args = arguments(command, tmp_path)
    before = online.stats.count(path="/v1/messages")
    done = CliRunner().invoke(app, [*args, "--ray"])
    assert done.exit_code == 2, done.stderr
    assert one_line(done.stderr).count("cannot import quorum") == 1  # said once, not per text
    assert online.stats.count(path="/v1/messages") == before
