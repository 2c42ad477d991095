"""``quorum review`` never reports as a pass a review that did not happen: skipped files,
failed calls, thresholds that cannot be met and outputs that cannot be written, on the
real command line through the Anthropic SDK and the emulator."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from quorum.cli.main import app
from quorum.testing.emulator import Emulator
from test_cli_review import EXAMPLE, MODEL, RULES, SECRET

FORMATS = {
    "text": [],
    "json": ["--json"],
    "markdown": ["--markdown"],
}


@pytest.fixture(scope="module")
def emulator() -> Iterator[Emulator]:
    with Emulator(script=RULES).in_thread() as emu:
        yield emu


@pytest.fixture
def cli(cli: CliRunner, monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    monkeypatch.setenv("ANTHROPIC_API_KEY", SECRET)
    return cli


def review(cli: CliRunner, *args: str) -> Any:
    return cli.invoke(app, ["review", "--model", MODEL, *args])


# -- nothing reviewed is never a pass ------------------------------------------------------


def _huge(tmp: Path) -> Path:
    path = tmp / "big.py"
    path.write_text("x = 1\n" * 200_000, encoding="utf-8")  # 1.2 MB, over the 1 MB default
    return path


def _binary_dir(tmp: Path) -> Path:
    folder = tmp / "assets"
    folder.mkdir()
    (folder / "a.py").write_bytes(b"\x00\x01\x02binary")
    (folder / "b.py").write_bytes(b"\x89PNG\x00\x00")
    return folder


def _latin(tmp: Path) -> Path:
    path = tmp / "latin.py"
    path.write_bytes(b"def f():\n    return 'caf\xe9'\n")
    return path


CASES = {
    "huge": (_huge, "too large", "--max-file-size"),
    "binary": (_binary_dir, "binary", "binary"),
    "latin": (_latin, "not UTF-8", "convert the file to UTF-8"),
}


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("style", sorted(FORMATS))
def test_a_review_of_nothing_exits_2_in_every_format_whatever_fail_on_says(
    cli: CliRunner, tmp_path: Path, case: str, style: str
) -> None:
    make, reason, hint = CASES[case]
    target = make(tmp_path)
    sarif, page = tmp_path / "out.sarif", tmp_path / "out.html"
    args = [str(target), *FORMATS[style], "--fail-on", "low", "--sarif", str(sarif), "--html", str(page)]
    result = review(cli, *args)
    assert result.exit_code == 2, result.output
    said = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(said) == 1
    assert said[0].startswith("error: nothing was reviewed")
    assert reason in said[0]
    assert hint in said[0]
    # Every report was written, and lists the file with its reason.
    assert reason in result.stdout
    if style == "json":
        document = json.loads(result.stdout)
        assert document["nothing_reviewed"] is True
        assert all(s["reason"] == reason and s["unreadable"] for s in document["skipped"])
    elif style == "text":
        assert "SKIPPED FILES" in result.stdout
        assert "NOTHING WAS REVIEWED" in result.stdout
        assert "No confirmed vulnerabilities" not in result.stdout
    else:
        assert "## Skipped files" in result.stdout
        assert "## Nothing was reviewed" in result.stdout
    run = json.loads(sarif.read_text(encoding="utf-8"))["runs"][0]
    (invocation,) = run["invocations"]
    assert invocation["executionSuccessful"] is False
    notes = invocation["toolExecutionNotifications"]
    assert notes
    assert all(n["level"] == "warning" and reason in n["message"]["text"] for n in notes)
    html = page.read_text(encoding="utf-8")
    assert '<section id="skipped">' in html
    assert "Nothing was reviewed" in html
    assert reason in html


def test_a_huge_file_is_reviewed_when_the_limit_allows_it(cli: CliRunner, tmp_path: Path) -> None:
    big = tmp_path / "big.py"
    big.write_text(EXAMPLE.read_text(encoding="utf-8") + "\n" + "x = 1\n" * 3000, encoding="utf-8")
    result = review(cli, str(big), "--max-file-size", "100", "--reviewers", "1")
    assert result.exit_code == 2
    result = review(cli, str(big), "--max-file-size", "10000000", "--reviewers", "1", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["files"] == [str(big)]


def test_one_unreadable_file_among_others_exits_1_and_says_so(cli: CliRunner, tmp_path: Path) -> None:
    shutil.copy(EXAMPLE, tmp_path / "login.py")
    _latin(tmp_path)
    result = review(cli, str(tmp_path), "--reviewers", "1")
    assert result.exit_code == 1, result.output
    assert "1 file could not be read (1 not UTF-8)" in result.stderr
    assert "files: 1 reviewed, 1 skipped (1 not UTF-8)" in result.stderr
    assert "latin.py: not UTF-8 (first bad byte on line 2" in result.stdout


# -- failed calls ----------------------------------------------------------------------------


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_when_every_call_fails_the_review_exits_1_whatever_fail_on_says(
    cli: CliRunner, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("ANTHROPIC_BASE_URL", f"http://127.0.0.1:{_closed_port()}")
    sarif = tmp_path / "x.sarif"
    result = review(cli, str(EXAMPLE), "--reviewers", "2", "--fail-on", "low", "--timeout", "2",
                    "--sarif", str(sarif))  # fmt: skip
    assert result.exit_code == 1, result.output
    assert "review incomplete: 8 of 9 reviews (calls and scans) failed" in result.stderr
    assert "Failed Calls (8):" in result.stdout
    assert json.loads(sarif.read_text())["runs"][0]["invocations"][0]["executionSuccessful"] is False


# -- checked before the first call ----------------------------------------------------------


def test_confirm_above_the_number_of_reviewers_is_refused(cli: CliRunner) -> None:
    result = review(cli, str(EXAMPLE), "--reviewers", "2,bandit", "--confirm", "4")
    assert result.exit_code == 2
    assert "--confirm 4 needs 4 reviewers to agree, but only 3 review" in result.stderr
    assert "calls:" not in result.stderr  # nothing was called


@pytest.mark.parametrize("option", ["--html", "--sarif"])
def test_an_output_that_cannot_be_written_fails_before_any_call(
    cli: CliRunner, tmp_path: Path, option: str
) -> None:
    result = review(cli, str(EXAMPLE), option, str(tmp_path))  # a directory
    assert result.exit_code == 2
    assert f"{option} {tmp_path}: is a directory" in result.stderr
    assert "model:" not in result.stderr  # no connection made, no call paid for
    blocker = tmp_path / "file"
    blocker.write_text("")
    result = review(cli, str(EXAMPLE), option, str(blocker / "report"))
    assert result.exit_code == 2
    assert "cannot be written" in result.stderr


# -- what the reports say -------------------------------------------------------------------


def test_sarif_uris_are_relative_to_the_repository_root_from_a_subdirectory(
    cli: CliRunner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    repo = tmp_path / "proj"
    (repo / "app").mkdir(parents=True)
    shutil.copy(EXAMPLE, repo / "app" / "db.py")
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    monkeypatch.chdir(repo / "app")
    result = review(cli, ".", "--sarif", "x.sarif")
    assert result.exit_code == 0, result.output
    run = json.loads((repo / "app" / "x.sarif").read_text())["runs"][0]
    uris = {r["locations"][0]["physicalLocation"]["artifactLocation"]["uri"] for r in run["results"]}
    assert uris == {"app/db.py"}
    assert run["originalUriBaseIds"]["%SRCROOT%"]["uri"] == repo.resolve().as_uri() + "/"


def test_diff_head_reviews_new_untracked_files(cli: CliRunner, tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    git = ["git", "-C", str(repo), "-c", "user.email=t@t", "-c", "user.name=t"]
    subprocess.run([*git[:3], "init", "-q"], check=True)
    (repo / "old.py").write_text("def f():\n    return 1\n", encoding="utf-8")
    subprocess.run([*git, "add", "."], check=True)
    subprocess.run([*git, "commit", "-qm", "one"], check=True)
    shutil.copy(EXAMPLE, repo / "new.py")  # new, not yet added
    result = review(cli, str(repo), "--diff", "HEAD", "--json")
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert [Path(f).name for f in document["files"]] == ["new.py"]
    assert any(g["confirmed"] and g["category"] == "sql_injection" for g in document["groups"])


def test_a_review_by_static_voters_alone_names_no_model(cli: CliRunner) -> None:
    """``--reviewers bandit`` asks no model, so none is announced (it used to say which
    model would run, and why)."""
    result = cli.invoke(app, ["review", str(EXAMPLE), "--reviewers", "bandit"])
    assert result.exit_code == 0, result.stderr
    assert "model:" not in result.stderr
    assert "bandit" in result.stdout
