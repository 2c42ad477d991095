"""Commands with the response cache (on by default): a repository reviewed again after one
function changed makes calls for that function only; a moderation run again (after a
kill, say) pays for nothing it had already asked."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from quorum.cli.main import app
from quorum.testing.emulator import Emulator

MODEL = "anthropic/claude-haiku-4-5"
NOTHING = {"findings": [], "overall_risk": "low"}
VOTE = {"decision": "acceptable", "confidence": "high", "reasoning": "fine"}
CODE = """
def first(a):
    return a + 1


def second(b):
    return "second " + b


def third(c):
    return c * 3
"""


@pytest.fixture(scope="module")
def emulator() -> Iterator[Emulator]:
    with Emulator(
        script=[{"match": "Classify", "data": VOTE}, {"match": ".", "data": NOTHING}]
    ).in_thread() as emu:
        yield emu


def review(cli: CliRunner, path: Path, *extra: str) -> None:
    result = cli.invoke(app, ["review", str(path), "--model", MODEL, "--reviewers", "2", *extra])
    assert result.exit_code == 0, result.output


def test_one_changed_function_is_the_only_one_reviewed_again(
    cli: CliRunner, emulator: Emulator, tmp_path: Path
) -> None:
    source = tmp_path / "code.py"
    source.write_text(CODE)
    review(cli, source)
    first = emulator.stats.count(path="/v1/messages")
    assert first == 6  # three functions, two reviewers
    source.write_text(CODE.replace('"second "', '"2nd "'))  # same lines, other code
    review(cli, source)
    assert emulator.stats.count(path="/v1/messages") - first == 2
    review(cli, source, "--no-cache")
    assert emulator.stats.count(path="/v1/messages") - first == 2 + 6  # --no-cache: all again


def test_moderation_run_again_reads_every_vote_from_the_cache(
    cli: CliRunner, emulator: Emulator, tmp_path: Path
) -> None:
    texts = tmp_path / "texts.jsonl"
    texts.write_text("".join(json.dumps({"id": i, "text": f"comment {i}"}) + "\n" for i in range(4)))
    command = ["moderate", "--input", str(texts), "--model", MODEL, "--ordered"]
    before = emulator.stats.count(path="/v1/messages")
    first = cli.invoke(app, command)
    assert first.exit_code == 0, first.output
    asked = emulator.stats.count(path="/v1/messages") - before
    assert asked == 4 * 5  # five moderators, each a sample of its own
    again = cli.invoke(app, command)
    assert again.exit_code == 0, again.output
    assert emulator.stats.count(path="/v1/messages") - before == asked
    assert again.stdout == first.stdout
    assert "cache: 20 from cache" in again.stderr
    assert "from cache" not in first.stderr


def test_moderation_with_a_journal_judges_only_what_it_had_not(
    cli: CliRunner, emulator: Emulator, tmp_path: Path
) -> None:
    texts = tmp_path / "texts.jsonl"
    texts.write_text("".join(json.dumps({"id": f"t{i}", "text": f"note {i}"}) + "\n" for i in range(3)))
    journal = str(tmp_path / "moderate.journal")
    command = ["moderate", "--input", str(texts), "--model", MODEL, "--ordered", "--no-cache"]
    before = emulator.stats.count(path="/v1/messages")
    first = cli.invoke(app, [*command, "--journal", journal])
    assert first.exit_code == 0, first.output
    assert emulator.stats.count(path="/v1/messages") - before == 3 * 5
    with texts.open("a") as f:
        f.write(json.dumps({"id": "t3", "text": "a new note"}) + "\n")
    again = cli.invoke(app, [*command, "--journal", journal])
    assert again.exit_code == 0, again.output
    assert emulator.stats.count(path="/v1/messages") - before == 4 * 5  # the new text only
    assert again.stdout.startswith(first.stdout)  # the same verdicts, from the journal
    assert [json.loads(line)["id"] for line in again.stdout.splitlines()] == ["t0", "t1", "t2", "t3"]
    texts.write_text(json.dumps({"id": "t0", "text": "another text under t0"}) + "\n")
    changed = cli.invoke(app, [*command, "--journal", journal])
    assert changed.exit_code == 2
    assert "'t0' changed" in changed.stderr
