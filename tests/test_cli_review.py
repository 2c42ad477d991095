"""``quorum review`` and ``quorum eval review`` end to end: the real command line, the
Anthropic SDK and the emulator, with scripted reviewers."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from quorum.cli.main import app
from quorum.testing.emulator import Emulator

EXAMPLE = Path(__file__).parents[1] / "examples" / "vulnerable_login.py"
MODEL = "anthropic/claude-haiku-4-5"
SECRET = "sk-ant-test-SECRET-0123456789"


def finding(category: str, line: int, severity: str = "critical") -> dict[str, Any]:
    return {
        "category": category,
        "cwe": None,
        "severity": severity,
        "confidence": "high",
        "start_line": line,
        "end_line": line,
        "description": f"{category} at line {line}",
        "recommendation": "use parameters",
    }


SQL_AT_22 = {"findings": [finding("sql_injection", 22)], "overall_risk": "critical"}
SQL_AT_4 = {"findings": [finding("sql_injection", 4)], "overall_risk": "critical"}
NOTHING = {"findings": [], "overall_risk": "low"}
RULES = [
    # Evaluation cases are reviewed as "<code>", where login()'s query is line 4.
    {"match": r"&lt;code&gt;[\s\S]*def login\([\s\S]*specializing in injection attacks", "data": SQL_AT_4},
    {"match": r"&lt;code&gt;[\s\S]*def login\([\s\S]*general application security expert", "data": SQL_AT_4},
    # Two reviewers report the query in login() (line 22 of the example): a confirmed finding.
    {"match": r"def login\([\s\S]*specializing in injection attacks", "data": SQL_AT_22},
    {"match": r"def login\([\s\S]*general application security expert", "data": SQL_AT_22},
    # One reviewer alone flags the random reset code: a potential issue.
    {"match": r"def reset_password[\s\S]*specializing in cryptography",
     "data": {"findings": [finding("insecure_random", 47, "medium")], "overall_risk": "medium"}},
    {"match": ".", "data": NOTHING},
]  # fmt: skip


@pytest.fixture(scope="module")
def emulator() -> Iterator[Emulator]:
    with Emulator(script=RULES).in_thread() as emu:
        yield emu


@pytest.fixture
def cli(cli: CliRunner, monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    monkeypatch.setenv("ANTHROPIC_API_KEY", SECRET)  # a key that must never be printed
    return cli


def review(cli: CliRunner, *args: str) -> Any:
    return cli.invoke(app, ["review", "--model", MODEL, *args])


def test_the_text_report_shows_confirmed_and_potential_findings(cli: CliRunner) -> None:
    result = review(cli, str(EXAMPLE))
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "SECURITY CODE REVIEW REPORT" in out
    assert "CONFIRMED VULNERABILITIES (1):" in out
    assert "sql_injection (CWE-89)" in out
    assert "vulnerable_login.py:22" in out
    assert "POTENTIAL ISSUES (1)" in out
    assert "insecure_random" in out
    assert "model: anthropic/claude-haiku-4-5 (--model)" in result.stderr
    assert "calls: " in result.stderr  # the closing line
    assert SECRET not in result.output


def test_json_sarif_and_html_outputs(cli: CliRunner, tmp_path: Path) -> None:
    sarif, html = tmp_path / "out.sarif", tmp_path / "report.html"
    result = review(cli, str(EXAMPLE), "--json", "--sarif", str(sarif), "--html", str(html))
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    confirmed = [g for g in document["groups"] if g["confirmed"]]
    assert [(g["category"], g["start_line"], g["vote_count"]) for g in confirmed] == [
        ("sql_injection", 22, 2)
    ]
    log = json.loads(sarif.read_text(encoding="utf-8"))
    assert log["version"] == "2.1.0"
    [sarif_result] = log["runs"][0]["results"]
    region = sarif_result["locations"][0]["physicalLocation"]["region"]
    assert region["startLine"] == 22
    page = html.read_text(encoding="utf-8")
    for anchor in ('id="summary"', 'id="findings"', 'id="vote-matrix"', 'id="timeline"'):
        assert anchor in page


@pytest.mark.parametrize(("level", "code"), [("critical", 3), ("high", 3), ("low", 3), (None, 0)])
def test_fail_on_sets_the_exit_code_from_confirmed_findings(
    cli: CliRunner, level: str | None, code: int
) -> None:
    extra = ["--fail-on", level] if level else []
    result = review(cli, str(EXAMPLE), *extra)
    assert result.exit_code == code
    if level:  # the finding that tripped the gate is named
        assert f"--fail-on {level}: critical sql_injection (CWE-89) at " in result.stderr
        assert "vulnerable_login.py:22, confirmed by 2 reviewers" in result.stderr


def test_fail_on_ignores_potential_issues(cli: CliRunner, tmp_path: Path) -> None:
    # Only the crypto reviewer flags reset_password: a potential issue never fails a gate.
    target = tmp_path / "reset.py"
    target.write_text(EXAMPLE.read_text(encoding="utf-8").split("def render_profile")[0], encoding="utf-8")
    result = review(cli, str(target), "--reviewers", "crypto_specialist,auth_specialist", "--fail-on", "low")
    assert result.exit_code == 0, result.output
    assert "POTENTIAL ISSUES" in result.stdout


def test_directories_count_what_they_skip(cli: CliRunner, tmp_path: Path) -> None:
    shutil.copy(EXAMPLE, tmp_path / "login.py")
    (tmp_path / "logo.png").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00binary")
    (tmp_path / "empty.py").write_text("", encoding="utf-8")
    (tmp_path / "node_modules").mkdir()
    (tmp_path / "node_modules" / "lib.js").write_text("eval(x)\n", encoding="utf-8")
    result = review(cli, str(tmp_path), "--json")
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    reasons = {s["reason"] for s in document["skipped"]}
    assert {"empty", "vendored"} <= reasons
    assert any(Path(f).name == "login.py" for f in document["files"])


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["missing.py"], "missing.py"),
        ([str(EXAMPLE), "--json", "--markdown"], "pick one"),
        ([str(EXAMPLE), "--fail-on", "severe"], "not a severity"),
        ([str(EXAMPLE), "--reviewers", "nobody"], "nobody"),
    ],
)
def test_mistakes_are_one_line_and_exit_2(cli: CliRunner, args: list[str], message: str) -> None:
    result = review(cli, *args)
    assert result.exit_code == 2, result.output
    assert message in result.stderr
    assert "Traceback" not in result.output


def test_a_missing_key_names_the_variable(cli: CliRunner, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ANTHROPIC_API_KEY")
    result = review(cli, str(EXAMPLE))
    assert result.exit_code == 2
    assert "ANTHROPIC_API_KEY is not set" in result.stderr
    assert len([line for line in result.stderr.splitlines() if line.startswith("error:")]) == 1


def test_verbose_logs_requests_and_replies_without_the_key(cli: CliRunner) -> None:
    result = review(cli, str(EXAMPLE), "--verbose", "--reviewers", "1")
    assert result.exit_code == 0, result.output
    assert "anthropic request" in result.stderr
    assert "anthropic reply" in result.stderr
    assert SECRET not in result.output


def test_eval_review_scores_a_labelled_pair(cli: CliRunner, tmp_path: Path) -> None:
    code = EXAMPLE.read_text(encoding="utf-8")
    login = code[code.index("def login") : code.index("def get_user_data")]
    fixed = login.replace("def login", "def login_fixed")
    cases = [
        {"id": "c1", "pair": "p1", "side": "before", "label": "vuln", "code": login,
         "vulnerable_lines": [{"cwe": "CWE-89", "line": 4}]},
        {"id": "c2", "pair": "p1", "side": "after", "label": "safe", "code": fixed, "vulnerable_lines": []},
        "not json",
    ]  # fmt: skip
    data = tmp_path / "cases.jsonl"
    data.write_text("\n".join(json.dumps(c) if isinstance(c, dict) else c for c in cases), encoding="utf-8")
    bad = cli.invoke(app, ["eval", "review", str(data), "--model", MODEL])
    assert bad.exit_code == 2
    assert "cases.jsonl:3" in bad.stderr  # the malformed line, by number

    data.write_text("\n".join(json.dumps(c) for c in cases[:2]), encoding="utf-8")
    result = cli.invoke(app, ["eval", "review", str(data), "--model", MODEL, "--json", "--thresholds", "1,2"])
    assert result.exit_code == 0, result.output
    scores = {row["confirm"]: row for row in json.loads(result.stdout)["thresholds"]}
    # The rules flag SQL injection inside login() only, never inside login_fixed():
    # the label (line 4, where the query is) is found and the fix raises no alarm.
    assert scores[2]["found_rate"] == 1.0
    assert scores[2]["false_alarm_rate"] == 0.0
    assert scores[2]["pair_accuracy"] == 1.0


def test_diff_reviews_only_the_units_that_changed(cli: CliRunner, tmp_path: Path) -> None:
    import subprocess

    def git(*args: str) -> None:
        subprocess.run(["git", "-C", str(tmp_path), *args], check=True, capture_output=True)

    git("init", "-q")
    shutil.copy(EXAMPLE, tmp_path / "app.py")
    (tmp_path / "other.py").write_text("def ok():\n    return 1\n", encoding="utf-8")
    git("add", ".")
    git("-c", "user.email=t@example.com", "-c", "user.name=t", "commit", "-qm", "start")
    app_py = tmp_path / "app.py"
    app_py.write_text(app_py.read_text(encoding="utf-8").replace("return template", "return template  # x"))
    result = review(cli, str(tmp_path), "--diff", "HEAD", "--json")
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert [u["name"] for u in document["units"]] == ["render_profile"]  # the one changed function
    assert {(Path(s["path"]).name, s["reason"]) for s in document["skipped"]} == {("other.py", "unchanged")}
