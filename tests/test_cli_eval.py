"""``quorum eval review`` on the command line: failed reviews are never scored as "found
nothing", and the data is checked with line numbers before any call."""

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
NOTHING = {"vulnerabilities": [], "risk": "none", "summary": "nothing found"}
RULES: list[dict[str, Any]] = [
    {"match": "UNREACHABLE", "error": "bad_request"},
    {"match": ".", "data": NOTHING},
]
CODE = "def f(x):\n    query = 'SELECT ' + x\n    return run(query)\n"


@pytest.fixture(scope="module")
def emulator() -> Iterator[Emulator]:
    with Emulator(script=RULES).in_thread() as emu:
        yield emu


def case(ident: str, side: str, code: str = CODE, **extra: Any) -> dict[str, Any]:
    labels = [{"cwe": "CWE-89", "line": 2}] if side == "before" else []
    return {"id": ident, "pair": ident[:-1], "side": side, "code": code, "vulnerable_lines": labels} | extra


def data_file(tmp_path: Path, lines: list[Any]) -> Path:
    path = tmp_path / "cases.jsonl"
    path.write_text("".join((json.dumps(x) if not isinstance(x, str) else x) + "\n" for x in lines))
    return path


def evaluate(runner: CliRunner, data: Path, *args: str) -> Any:
    return runner.invoke(app, ["eval", "review", str(data), "--model", MODEL, "--reviewers", "2", *args])


def test_failed_reviews_are_counted_not_scored_as_found_nothing(cli: CliRunner, tmp_path: Path) -> None:
    broken = "def g(y):  # UNREACHABLE\n    return y\n"
    data = data_file(tmp_path, [case("p1a", "before"), case("p1b", "after"), case("p2a", "before", broken)])
    result = evaluate(cli, data, "--json")
    facts = json.loads(result.stdout)
    assert facts["failed_reviews"] == 1
    assert [f["id"] for f in facts["failures"]] == ["p2a"]
    assert "every reviewer failed" in facts["failures"][0]["error"]
    by_confirm = {row["confirm"]: row for row in facts["thresholds"]}
    assert by_confirm[1]["before_functions"] == 1  # the failed one is in no score
    assert "function p2a was not reviewed" in result.stderr
    assert "1 of 3 functions could not be reviewed" in result.stderr
    assert result.exit_code == 1


def test_every_review_failing_exits_2(cli: CliRunner, tmp_path: Path) -> None:
    broken = "def g(y):  # UNREACHABLE\n    return y\n"
    data = data_file(tmp_path, [case("p1a", "before", broken)])
    result = evaluate(cli, data)
    assert result.exit_code == 2
    assert "1 of 1 function could not be reviewed" in result.stderr


@pytest.mark.parametrize(
    ("labels", "message"),
    [
        ("abc", '"vulnerable_lines" must be a list'),
        ([26], "vulnerable_lines[0] must be an object"),
        (
            [{"cwe": "CWE-89", "line": 26}],
            "vulnerable_lines[0] line 26 is outside the code, which has 3 lines",
        ),
        ([{"cwe": "CWE-89", "line": "2"}], '"line" must be a whole number'),
    ],
)
def test_bad_labels_are_refused_with_the_line_number(
    cli: CliRunner, emulator: Emulator, tmp_path: Path, labels: Any, message: str
) -> None:
    before = emulator.stats.total
    data = data_file(tmp_path, [case("p1a", "before"), case("p1b", "after", vulnerable_lines=labels)])
    result = evaluate(cli, data)
    assert result.exit_code == 2
    assert "cases.jsonl:2:" in result.stderr
    assert message in result.stderr.replace("\n", " ")
    assert "Traceback" not in result.output
    assert emulator.stats.total == before


def test_an_empty_data_file_is_nothing_done(cli: CliRunner, tmp_path: Path) -> None:
    result = evaluate(cli, data_file(tmp_path, []))
    assert result.exit_code == 2
    assert "no evaluation cases" in result.stderr
    assert "n/a" not in result.stdout


def test_eval_json_uses_the_shared_keys(cli: CliRunner, tmp_path: Path) -> None:
    data = data_file(tmp_path, [case("p1a", "before"), case("p1b", "after")])
    result = evaluate(cli, data, "--json")
    assert result.exit_code == 0, result.output
    facts = json.loads(result.stdout)
    assert facts["schema_version"] == 1
    assert set(facts["summary"]["usage"]) == {"input_tokens", "output_tokens"}
    assert {"calls", "wall_s", "cost_usd", "stopped"} <= set(facts["summary"])


def test_a_refused_connection_is_reported_as_refused_not_as_a_timeout(
    cli: CliRunner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import socket

    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    monkeypatch.setenv("ANTHROPIC_BASE_URL", f"http://127.0.0.1:{port}")
    data = data_file(tmp_path, [case("p1a", "before")])
    # --timeout is per call attempt: shorter than the retries' backoff (0.5 + 1 + 2 s),
    # it must not cut the retried call short and call the refusal a timeout.
    result = evaluate(cli, data, "--timeout", "1", "--reviewers", "1", "--json")
    (failure,) = json.loads(result.stdout)["failures"]
    assert "ConnectionFailed" in failure["error"]
    assert "Timeout" not in failure["error"]
    assert result.exit_code == 2
