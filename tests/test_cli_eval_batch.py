"""``quorum eval review --batch-api``: every reviewer's call through the provider's batch
API on the emulator, the same scores as online at the batch price, and a stop resumed
without a second batch."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from batch_kills import kill_while_the_batch_runs_then_resume
from quorum.apps.review.evaluate import load_cases, plan_reviews
from quorum.apps.review.system import CodeReviewSystem
from quorum.cli.main import app
from quorum.engine.batch_ledger import BatchLedger
from quorum.engine.connection import connect
from quorum.llm import FakeProvider
from quorum.testing.emulator import Emulator

MODEL = "anthropic/claude-haiku-4-5"


def finding(category: str, cwe: int, line: int) -> dict[str, Any]:
    return {
        "category": category,
        "cwe": cwe,
        "severity": "high",
        "confidence": "high",
        "start_line": line,
        "end_line": line,
        "description": "scripted",
        "recommendation": "scripted",
    }


SQL = {"findings": [finding("sql_injection", 89, 2)], "overall_risk": "high"}
NOTHING: dict[str, Any] = {"findings": [], "overall_risk": "none"}
RULES: list[dict[str, Any]] = [  # by the marker in each function, and the reviewer
    {"match": "FIXED", "data": NOTHING},
    {"match": "(?s)^(?=.*BROKEN)(?=.*authentication)", "error": "bad_request"},
    {"match": "(?s)^(?=.*HALF)(?=.*injection attacks)", "data": SQL},
    {"match": "HALF", "data": NOTHING},
    {"match": ".", "data": SQL},
]
BEFORE = "def f(x):\n    query = 'SELECT ' + x\n    return run(query)\n"
AFTER = "def f(x):  # FIXED\n    query = 'SELECT ?'\n    return run(query, x)\n"
BROKEN = "def g(y):  # BROKEN\n    query = 'SELECT ' + y\n    return run(query)\n"
HALF = "def h(z):  # HALF\n    query = 'SELECT ' + z\n    return run(query)\n"


@pytest.fixture(scope="module")
def emulator() -> Iterator[Emulator]:
    with Emulator(script=RULES, batch_time=0.05).in_thread() as emu:
        yield emu


def case(ident: str, pair: str, side: str, code: str) -> dict[str, Any]:
    labels = [{"cwe": "CWE-89", "line": 2}] if side == "before" else []
    return {"id": ident, "pair": pair, "side": side, "code": code, "vulnerable_lines": labels}


def data(tmp_path: Path) -> Path:
    cases = [
        case("p1b", "p1", "before", BEFORE),
        case("p1a", "p1", "after", AFTER),
        case("p2b", "p2", "before", BROKEN),
        case("p3b", "p3", "before", HALF),
    ]
    path = tmp_path / "data.jsonl"
    path.write_text("".join(json.dumps(c) + "\n" for c in cases))
    return path


def evaluate(runner: CliRunner, path: Path, *args: str) -> Any:
    command = ["eval", "review", str(path), "--model", MODEL, "--reviewers", "3", "--no-cache", "--json"]
    return runner.invoke(app, [*command, *args])


def test_the_batch_run_scores_as_online_at_the_batch_price(
    cli: CliRunner, emulator: Emulator, tmp_path: Path
) -> None:
    path = data(tmp_path)
    online = evaluate(cli, path)
    created, billed = emulator.stats.batches_created, emulator.stats.batch_cost_usd
    batched = evaluate(cli, path, "--batch-api", "--poll", "0.05", "--journal", str(tmp_path / "j.db"))
    assert batched.exit_code == online.exit_code == 0, batched.output
    assert emulator.stats.batches_created == created + 1  # every call in one batch
    assert emulator.stats.batch_items == 4 * 3  # four functions of one unit each, three reviewers
    first, second = json.loads(online.stdout), json.loads(batched.stdout)
    assert second["thresholds"] == first["thresholds"]
    assert second["incomplete_reviews"] == first["incomplete_reviews"] == 1  # BROKEN's failed reviewer
    assert first["thresholds"][1]["found_rate"] == 0.6667  # HALF is found by one only
    assert second["summary"]["cost_usd"] == pytest.approx(emulator.stats.batch_cost_usd - billed)
    assert second["summary"]["cost_usd"] < first["summary"]["cost_usd"]
    assert second["batch"]["batches_created"] == 1
    assert "1 batch(es) created" in batched.stderr


def test_sigkill_while_the_batch_runs_then_resume_creates_no_second_batch(tmp_path: Path) -> None:
    path, journal, out = data(tmp_path), tmp_path / "j.db", tmp_path / "scores.json"
    command = [sys.executable, "-m", "quorum.cli.main", "eval", "review", str(path), "--model", MODEL]
    command += ["--reviewers", "3", "--no-cache", "--json", "-o", str(out), "--batch-api", "--poll", "0.05"]
    command += ["--journal", str(journal)]
    with Emulator(script=RULES, batch_time=3.0).in_thread() as emu:
        done = kill_while_the_batch_runs_then_resume(command, emu)
        assert emu.stats.batch_items == 4 * 3  # each call sent once
    assert done.returncode == 0, done.stderr
    with BatchLedger(journal) as ledger:
        assert len(ledger.claimed()) == 1
    scores = json.loads(out.read_text())
    assert [row["found_rate"] for row in scores["thresholds"]] == [1.0, 0.6667, 0.3333]
    assert (scores["batch"]["answered"], scores["batch"]["failed"]) == (11, 1)  # BROKEN's bad request


async def test_planned_reviews_are_named_by_function_reviewer_and_unit(tmp_path: Path) -> None:
    provider = FakeProvider()
    system = CodeReviewSystem(llm=connect(provider), reviewers=2)
    cases = load_cases(data(tmp_path))
    planned = await plan_reviews(cases[:2], system)
    assert list(planned) == [
        f"{c}:{r}@<code>:1-3" for c in ("p1b", "p1a") for r in ("injection_specialist", "auth_specialist")
    ]
    assert provider.calls == []  # nothing was sent
    with BatchLedger(tmp_path / "unused.db") as ledger:
        assert ledger.claimed() == frozenset()
