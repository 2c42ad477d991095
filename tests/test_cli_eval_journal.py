"""``quorum eval review --journal``: running again reviews only the functions not yet
done, and a data line changed under its journal is an error naming it."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from quorum.cli.main import app
from quorum.testing.emulator import Emulator

MODEL = "anthropic/claude-haiku-4-5"
SQL = {  # every reviewer reports the injection on line 2
    "findings": [
        {
            "category": "sql_injection",
            "cwe": 89,
            "severity": "high",
            "confidence": "high",
            "start_line": 2,
            "end_line": 2,
            "description": "query built from input",
            "recommendation": "use parameters",
        }
    ],
    "overall_risk": "high",
}
CODE = "def f(x):\n    query = 'SELECT ' + x\n    return run(query)\n"
FLAKY = "def g(y):  # FLAKY\n    query = 'SELECT ' + y\n    return run(query)\n"


@pytest.fixture(scope="module")
def emulator() -> Iterator[Emulator]:
    """The first run's server: the FLAKY function's calls are refused."""
    rules = [{"match": "FLAKY", "error": "bad_request"}, {"match": ".", "data": SQL}]
    with Emulator(script=rules).in_thread() as emu:
        yield emu


@pytest.fixture(scope="module")
def healed() -> Iterator[Emulator]:
    """The second run's server: every call answers."""
    with Emulator(script=[{"match": ".", "data": SQL}]).in_thread() as emu:
        yield emu


def case(ident: str, side: str, code: str = CODE) -> dict[str, Any]:
    labels = [{"cwe": "CWE-89", "line": 2}] if side == "before" else []
    return {"id": ident, "pair": ident[:-1], "side": side, "code": code, "vulnerable_lines": labels}


def write(path: Path, cases: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(c) + "\n" for c in cases))
    return path


def evaluate(runner: CliRunner, data: Path, journal: Path, *args: str) -> Any:
    # --no-cache: every review not taken from the journal reaches the server.
    command = ["eval", "review", str(data), "--model", MODEL, "--reviewers", "2", "--no-cache"]
    return runner.invoke(app, [*command, "--journal", str(journal), "--json", *args])


def point_at(emulator: Emulator, monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in emulator.env().items():
        monkeypatch.setenv(name, value)


def calls(emulator: Emulator) -> int:
    return emulator.stats.count()


def test_a_second_run_reviews_only_the_function_that_failed(
    cli: CliRunner,
    emulator: Emulator,
    healed: Emulator,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    data = write(
        tmp_path / "cases.jsonl", [case("p1a", "before"), case("p1b", "after"), case("p2a", "before", FLAKY)]
    )
    journal = tmp_path / "eval.journal"

    first = evaluate(cli, data, journal)
    assert first.exit_code == 1, first.output
    assert [f["id"] for f in json.loads(first.stdout)["failures"]] == ["p2a"]

    point_at(healed, monkeypatch)
    second = evaluate(cli, data, journal)
    assert second.exit_code == 0, second.output
    assert calls(healed) == 2  # two reviewers, one function: p2a's
    facts = json.loads(second.stdout)
    assert facts["failed_reviews"] == 0
    assert facts["from_journal"] == 2
    at_1 = next(row for row in facts["thresholds"] if row["confirm"] == 1)
    # p1a's findings came back from the journal and are scored as found.
    assert (at_1["before_functions"], at_1["found_rate"]) == (2, 1.0)
    assert at_1["after_functions"] == 1
    assert at_1["false_alarm_rate"] == 1.0  # the same answer on the fixed side

    third = evaluate(cli, data, journal)
    assert third.exit_code == 0
    assert calls(healed) == 2  # everything was done: no call at all
    assert "reviewed 3 functions (3 from the journal)" in third.stderr
    assert json.loads(third.stdout)["thresholds"] == facts["thresholds"]


def test_a_changed_line_under_the_same_id_is_an_error_unless_restart(
    cli: CliRunner, emulator: Emulator, tmp_path: Path
) -> None:
    data = write(tmp_path / "cases.jsonl", [case("p1a", "before")])
    journal = tmp_path / "eval.journal"
    assert evaluate(cli, data, journal).exit_code == 0

    changed = dict(case("p1a", "before"), code=CODE.replace("x", "z"))
    write(data, [changed])
    before = calls(emulator)
    refused = evaluate(cli, data, journal)
    assert refused.exit_code == 2
    assert "'p1a' changed" in refused.stderr
    assert "--restart" in refused.stderr
    assert calls(emulator) == before

    restarted = evaluate(cli, data, journal, "--restart")
    assert restarted.exit_code == 0, restarted.output
    assert calls(emulator) == before + 2


def test_other_reviewers_are_a_change_too(cli: CliRunner, emulator: Emulator, tmp_path: Path) -> None:
    data = write(tmp_path / "cases.jsonl", [case("p1a", "before")])
    journal = tmp_path / "eval.journal"
    assert evaluate(cli, data, journal).exit_code == 0
    refused = evaluate(cli, data, journal, "--reviewers", "1")
    assert refused.exit_code == 2
    assert "'p1a' changed" in refused.stderr


def test_restart_without_a_journal_is_refused(cli: CliRunner, tmp_path: Path) -> None:
    data = write(tmp_path / "cases.jsonl", [case("p1a", "before")])
    result = cli.invoke(app, ["eval", "review", str(data), "--model", MODEL, "--restart"])
    assert result.exit_code == 2
    assert "--journal" in result.stderr
