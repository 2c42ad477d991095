"""The commands' shared promises, on the command line: exit statuses that never report
failure as success, every item accounted for, credentials redacted, outputs checked
before any call, help that shows what it says. Through the emulator, or ``--model fake``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from quorum.cli.main import app
from quorum.testing.emulator import Emulator

MODEL = "anthropic/claude-haiku-4-5"


def answer(decision: str) -> dict[str, str]:
    return {"decision": decision, "confidence": "high", "reasoning": "scripted"}


RULES: list[dict[str, Any]] = [
    {"match": "broken text", "error": "bad_request"},
    {"match": "locked text", "error": "auth"},
    {"match": "Classify", "data": answer("acceptable")},
    {"match": "Translate", "reply": "Bonjour"},
    {"match": ".", "reply": "A plain answer."},
]


@pytest.fixture(scope="module")
def emulator() -> Iterator[Emulator]:
    with Emulator(script=RULES).in_thread() as emu:
        yield emu


def invoke(runner: CliRunner, *args: str, stdin: str | bytes | None = None) -> Any:
    command, *rest = args
    return runner.invoke(app, [command, "--model", MODEL, *rest], input=stdin)


def jsonl(tmp_path: Path, lines: list[str], name: str = "texts.jsonl") -> Path:
    path = tmp_path / name
    path.write_text("".join(line + "\n" for line in lines))
    return path


# -- item 3: moderate counts error verdicts as errors ---------------------------------------


def test_moderate_counts_failed_votes_as_errors_and_exits_non_zero(cli: CliRunner) -> None:
    result = invoke(cli, "moderate", "broken text one", "broken text two", "fine text", "--json")
    document = json.loads(result.stdout)
    assert document["summary"]["texts"] == {"error": 2, "ok": 1}
    assert "moderated 3 texts (2 error, 1 ok)" in result.stderr
    assert result.stderr.count("error: arguments text") == 2  # a line for each, saying why
    assert result.exit_code == 1


def test_moderate_where_every_text_failed_exits_2(cli: CliRunner) -> None:
    result = invoke(cli, "moderate", "broken text")
    assert result.exit_code == 2
    assert "moderated 1 text (1 error)" in result.stderr
    assert "saved" not in result.stderr  # no time was saved by calls that all failed
    assert "no call succeeded" in result.stderr


# -- item 4: texts skipped by a budget, and blank lines, are written and counted ------------


def test_moderate_writes_a_skipped_verdict_for_every_text_a_budget_left(
    cli: CliRunner, tmp_path: Path
) -> None:
    source = jsonl(tmp_path, [json.dumps({"id": f"t{i}", "text": f"text {i}"}) for i in range(12)] + [""])
    result = invoke(cli, "moderate", "--input", str(source), "--budget", "0.000001", "--concurrency", "1")
    verdicts = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(verdicts) == 12  # one line per text, never fewer
    statuses = [v["status"] for v in verdicts]
    assert statuses.count("skipped") >= 10
    assert all("budget" in v["error"] for v in verdicts if v["status"] == "skipped")
    assert "1 blank line passed over" in result.stderr
    assert result.exit_code == 1
    assert "skipped" in result.stderr.splitlines()[-1] or "skipped)" in result.stderr


def test_budget_spent_is_one_true_figure(cli: CliRunner, tmp_path: Path) -> None:
    source = jsonl(tmp_path, [json.dumps(f"text {i}") for i in range(12)])
    # Two texts in flight: the second's calls finish after the cap is reached, and count.
    result = invoke(
        cli, "moderate", "--input", str(source), "--budget", "0.000001", "--concurrency", "2", "--json"
    )
    document = json.loads(result.stdout)
    stopped = document["summary"]["stopped"]
    assert f"spent ${document['summary']['cost_usd']:.4f} in all" in stopped
    assert stopped.count("$") == 2  # the cap and the one true figure, no other
    assert stopped in result.stderr.replace("\n", " ")


def test_moderate_blank_lines_are_counted_in_the_json(cli: CliRunner, tmp_path: Path) -> None:
    source = jsonl(tmp_path, ['"fine"', "", "  ", '"also fine"'])
    result = invoke(cli, "moderate", "--input", str(source), "--json")
    assert json.loads(result.stdout)["summary"]["blank_lines"] == 2
    assert result.exit_code == 0


# -- item 6: credentials in a base URL are redacted wherever the URL is shown ---------------


def test_credentials_in_a_base_url_are_redacted(
    cli: CliRunner, emulator: Emulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = emulator.anthropic_base_url.replace("http://", "http://user:hunter2secret@")
    monkeypatch.setenv("ANTHROPIC_BASE_URL", url)
    result = invoke(cli, "moderate", "locked text", "--json")
    assert result.exit_code == 2
    assert "http://[REDACTED]@127.0.0.1" in result.stdout
    assert "http://[REDACTED]@127.0.0.1" in result.stderr
    assert "hunter2secret" not in result.stdout + result.stderr


def test_query_values_in_a_url_are_redacted() -> None:
    from quorum.llm.secrets import redact

    shown = redact("the connection to https://proxy.example/v1?key=querysecret&region=eu failed")
    assert shown == "the connection to https://proxy.example/v1?key=[REDACTED]&region=[REDACTED] failed"


def test_the_temperature_note_is_not_a_warning_on_every_run(cli: CliRunner) -> None:
    result = invoke(cli, "moderate", "fine")
    assert "temperature" not in result.stderr


# -- item 9: output paths are checked before the first call ---------------------------------


@pytest.mark.parametrize(
    "command", [["moderate", "fine"], ["analyze", "-"], ["translate", "hi", "--to", "fr"]]
)
def test_an_output_path_that_cannot_be_written_costs_nothing(
    cli: CliRunner, emulator: Emulator, tmp_path: Path, command: list[str]
) -> None:
    before = emulator.stats.total
    result = invoke(cli, *command, "--output", str(tmp_path), stdin="some text")
    assert result.exit_code == 2
    assert "is a directory" in result.stderr
    missing = invoke(cli, *command, "-o", str(tmp_path / "no" / "out.json"), stdin="some text")
    assert missing.exit_code == 2
    assert "does not exist" in missing.stderr
    assert emulator.stats.total == before


def test_output_goes_to_the_file(cli: CliRunner, tmp_path: Path) -> None:
    target = tmp_path / "verdicts.jsonl"
    result = invoke(cli, "moderate", "fine", "-o", str(target))
    assert result.exit_code == 0
    assert result.stdout == ""
    assert json.loads(target.read_text())["status"] == "ok"


# -- item 12: binary data is refused by one rule, by path or on stdin ---------------------


def test_binary_data_on_stdin_is_refused_like_a_binary_file(
    cli: CliRunner, emulator: Emulator, tmp_path: Path
) -> None:
    data = b"PK\x03\x04\x00\x00binary\xff\xfe"
    (tmp_path / "blob.bin").write_bytes(data)
    before = emulator.stats.total
    by_path = invoke(cli, "analyze", str(tmp_path / "blob.bin"))
    on_stdin = invoke(cli, "analyze", "-", stdin=data)
    for result in (by_path, on_stdin):
        assert result.exit_code == 2
        assert "binary data" in result.stderr
    assert emulator.stats.total == before


# -- item 13: a document too long for the model's context is refused at once ----------------


def test_a_document_too_long_for_the_context_is_refused_before_any_call(
    cli: CliRunner, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from quorum.cli import common
    from quorum.engine.connection import connect
    from quorum.llm import FakeProvider
    from quorum.llm.provider import Capabilities

    fake = FakeProvider(capabilities=Capabilities(max_context=2048, local=True))
    monkeypatch.setattr(common, "connect", lambda *_a, **_k: connect(fake))
    document = tmp_path / "long.txt"
    document.write_text("All work and no play. " * 10_000)  # 220 KB
    result = invoke(cli, "analyze", str(document))
    assert result.exit_code == 2
    assert "220,000 characters" in result.stderr
    assert "2,048 tokens" in result.stderr
    assert fake.calls == []


# -- smaller ---------------------------------------------------------------------------------


def test_bracketed_text_is_shown_as_written(cli: CliRunner, tmp_path: Path) -> None:
    result = invoke(cli, "analyze", str(tmp_path / "[draft] notes.txt"))
    assert "[draft] notes.txt: no such file" in result.stderr
    help_text = cli.invoke(app, ["analyze", "--help"], terminal_width=200).stdout
    assert "[[section]]" in help_text


def test_a_directory_is_not_called_a_missing_file(cli: CliRunner, tmp_path: Path) -> None:
    result = invoke(cli, "moderate", "--input", str(tmp_path))
    assert result.exit_code == 2
    assert "is a directory" in result.stderr
    assert "no such file" not in result.stderr


def test_json_errors_name_the_column_once(tmp_path: Path, cli: CliRunner) -> None:
    source = tmp_path / "bad.jsonl"
    source.write_text('{"text": "a\tb"}\n')
    result = invoke(cli, "moderate", "--input", str(source))
    assert "at column" in result.stderr
    assert "at at" not in result.stderr


def test_plurals(cli: CliRunner) -> None:
    result = invoke(cli, "moderate", "fine")
    assert "moderated 1 text (1 ok)" in result.stderr
    assert "calls: 5 tasks" in result.stderr


def test_options_are_named_as_options(cli: CliRunner) -> None:
    for command in (["moderate", "fine"], ["translate", "hi", "--to", "fr"]):
        result = invoke(cli, *command, "--threshold", "1.5")
        assert result.exit_code == 2
        assert "--threshold" in result.stderr
        assert "consensus_threshold" not in result.stderr


def test_version_short_help_examples_and_defaults() -> None:
    runner = CliRunner()
    version = runner.invoke(app, ["--version"])
    assert version.exit_code == 0
    assert version.stdout.startswith("quorum ")
    for command in ("moderate", "analyze", "translate", "review"):
        short = runner.invoke(app, [command, "-h"], terminal_width=200)
        assert short.exit_code == 0
        assert "Examples:" in short.stdout
        for shown in ("default: 300", "default: no limit", "default: 8"):
            flat = " ".join(short.stdout.replace("(", "").replace(")", "").split()).lower()
            assert shown in flat, (command, shown)
    assert "Exit status" in runner.invoke(app, ["-h"], terminal_width=200).stdout


def test_json_keys_are_the_same_in_every_command(cli: CliRunner) -> None:
    documents = [
        json.loads(invoke(cli, "moderate", "fine", "--json").stdout),
        json.loads(invoke(cli, "analyze", "-", "--json", stdin="A document.").stdout),
        json.loads(invoke(cli, "translate", "hello", "--to", "fr", "--json").stdout),
    ]
    for document in documents:
        assert document["schema_version"] == 1
        summary = document["summary"]
        assert {"calls", "wall_s", "usage", "cost_usd", "stopped"} <= set(summary)
        assert set(summary["usage"]) == {"input_tokens", "output_tokens"}
        assert "execution_time" not in json.dumps(document)
        assert '"cost"' not in json.dumps(document)


def test_fake_model_rules_from_the_command_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    rules = tmp_path / "rules.json"
    rules.write_text(json.dumps([{"match": "Summary|summary", "reply": "Scripted summary."}]))
    runner = CliRunner()
    by_option = runner.invoke(
        app, ["analyze", "-", "--model", "fake", "--fake-rules", str(rules)], input="Text."
    )
    assert "Scripted summary." in by_option.stdout
    monkeypatch.setenv("QUORUM_FAKE_RULES", str(rules))
    by_env = runner.invoke(app, ["analyze", "-", "--model", "fake"], input="Text.")
    assert "Scripted summary." in by_env.stdout
    wrong = runner.invoke(app, ["analyze", "-", "--model", MODEL, "--fake-rules", str(rules)], input="Text.")
    assert wrong.exit_code == 2
    assert "--fake-rules" in wrong.stderr


def test_a_closed_stdout_ends_quietly() -> None:
    import quorum

    texts = "".join(f"text {i}\n" for i in range(300))
    env = {**os.environ, "PYTHONPATH": str(Path(quorum.__file__).parents[1])}
    script = f"{sys.executable} -m quorum.cli.main moderate --model fake - | head -1"
    done = subprocess.run(
        ["sh", "-c", script], input=texts, capture_output=True, text=True, env=env, timeout=60
    )
    assert len(done.stdout.splitlines()) == 1
    assert "Broken pipe" not in done.stderr
    assert "Traceback" not in done.stderr
    assert "Exception ignored" not in done.stderr
