"""Document analysis: the chapter's four sections, custom sections from TOML, failures
listed, and every mistake in a sections file caught before any call."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from quorum.apps.analyze import SECTIONS, analyze, load_sections, to_json, to_markdown
from quorum.cli import analyze as analyze_cli
from quorum.engine import Budget
from quorum.errors import ConfigError
from quorum.llm import FakeProvider
from quorum.testing.emulator import Emulator

MODEL = "anthropic/claude-haiku-4-5"
DOCUMENT = "Revenue grew 23% while the hardware segment declined 5%."
RULES: list[dict[str, Any]] = [
    {"match": "concise summarizer", "reply": "Revenue up, hardware down."},
    {"match": "key information", "reply": "- Revenue +23%\n- Hardware -5%"},
    {"match": "sentiment analyst", "error": "bad_request"},
    {"match": "reader questions", "reply": "1. Why did hardware decline?"},
    {"match": "risk analyst", "reply": "Supply chain."},
]
CUSTOM = """
[[section]]
name = "Risks"
prompt = "List the risks in this text:\\n\\n{input}"
system = "You are a risk analyst."

[[section]]
name = "Verbatim"
prompt = "Quote {{exactly}} one sentence of:\\n\\n{input}"
"""


def write(tmp_path: Path, text: str, name: str = "sections.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


# -- the library -------------------------------------------------------------------------


async def test_the_chapters_four_sections_run_and_failures_are_listed() -> None:
    llm = FakeProvider(rules=RULES)
    result = await analyze(DOCUMENT, llm=llm)
    assert list(result.sections) == ["Summary", "Key Points", "Sentiment", "Questions"]
    assert result.successful == ["Summary", "Key Points", "Questions"]
    assert result.failed == ["Sentiment"]
    assert result.sections["Summary"].content == "Revenue up, hardware down."
    markdown = to_markdown(result, title="Analysis")
    assert markdown.index("## Summary") < markdown.index("## Key Points") < markdown.index("## Questions")
    assert "## Failed sections" in markdown
    assert "- Sentiment: BadRequest" in markdown
    sent = {r.system: r.messages[0].content for r in llm.calls}
    assert sent["You are a concise summarizer. Be brief and accurate."] == (
        f"Provide a 2-3 sentence summary of this text:\n\n{DOCUMENT}"
    )
    assert set(sent) == {s.system_prompt for s in SECTIONS}


async def test_json_keeps_every_section_in_order() -> None:
    result = await analyze(DOCUMENT, llm=FakeProvider(rules=RULES))
    data = to_json(result, source="doc.txt")
    assert [s["name"] for s in data["sections"]] == ["Summary", "Key Points", "Sentiment", "Questions"]
    failed = data["sections"][2]
    assert (failed["success"], failed["content"]) == (False, "")
    assert "BadRequest" in failed["error"]
    json.dumps(data)  # plain data all the way down


async def test_budget_and_events_reach_the_section_calls() -> None:
    events: list[Any] = []
    budget = Budget(tokens=10**6)
    await analyze(DOCUMENT, llm=FakeProvider(rules=RULES), budget=budget, on_event=events.append)
    assert budget.spent_tokens > 0
    assert {e.task_id for e in events} == {"Summary", "Key Points", "Sentiment", "Questions"}


def test_custom_sections_from_toml(tmp_path: Path) -> None:
    risks, verbatim = load_sections(write(tmp_path, CUSTOM))
    assert (risks.name, risks.system_prompt) == ("Risks", "You are a risk analyst.")
    assert risks.prompt_template.format(input="T") == "List the risks in this text:\n\nT"
    assert verbatim.system_prompt is None
    assert verbatim.prompt_template.format(input="T").startswith("Quote {exactly} one")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[[section]\nname = "x"', "not valid TOML"),
        ('title = "x"', "no [[section]] tables"),
        ('[[section]]\nprompt = "{input}"', "section 1: missing 'name'"),
        ('[[section]]\nname = "A"\n', "section 1: missing 'prompt'"),
        ('[[section]]\nname = "A"\nprompt = "{input}"\nmodel = "x"', "unknown keys ['model']"),
        ('[[section]]\nname = "A"\nprompt = "Use {text}"', "section 'A': prompt uses {text}"),
        ('[[section]]\nname = "A"\nprompt = "Use {input"', "section 'A': prompt is not a valid"),
        ('[[section]]\nname = "A"\nprompt = "no document"', "never uses {input}"),
        ('[[section]]\nname = "A"\nprompt = "{input}"\n[[section]]\nname = "A"\nprompt = "{input}"', "two"),
    ],
)
def test_sections_file_mistakes_name_the_file_and_section(tmp_path: Path, text: str, message: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        load_sections(path)
    assert str(caught.value).startswith(str(path))
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)


async def test_an_empty_document_is_refused() -> None:
    llm = FakeProvider(rules=RULES)
    with pytest.raises(ConfigError, match="empty"):
        await analyze("  \n", llm=llm)
    assert llm.calls == []


# -- the command, on the wire ----------------------------------------------------------------


@pytest.fixture(scope="module")
def emulator() -> Iterator[Emulator]:
    with Emulator(script=RULES).in_thread() as emu:
        yield emu


def invoke(runner: CliRunner, *args: str, stdin: str | None = None) -> Any:
    app = typer.Typer()
    app.command("analyze")(analyze_cli.command)
    return runner.invoke(app, ["--model", MODEL, *args], input=stdin)


def test_cli_writes_markdown_with_failed_sections_listed(cli: CliRunner, tmp_path: Path) -> None:
    document = write(tmp_path, DOCUMENT, "report.txt")
    result = invoke(cli, str(document))
    assert result.exit_code == 1  # a section failed; the others are still shown
    assert result.stdout.startswith("# Analysis of report.txt")
    for heading in ("## Summary", "## Key Points", "## Questions", "## Failed sections"):
        assert heading in result.stdout
    assert "- Sentiment: BadRequest" in result.stdout
    assert "calls: 4 tasks (1 error, 3 ok)" in result.stderr


def test_cli_json_and_stdin(cli: CliRunner) -> None:
    result = invoke(cli, "-", "--json", stdin=DOCUMENT)
    data = json.loads(result.stdout)
    assert data["source"] == "stdin"
    assert data["failed"] == ["Sentiment"]
    assert data["sections"][0]["content"] == "Revenue up, hardware down."


def test_cli_custom_sections(cli: CliRunner, tmp_path: Path) -> None:
    sections = write(tmp_path, CUSTOM)
    result = invoke(cli, "-", "--sections", str(sections), stdin=DOCUMENT)
    assert result.exit_code == 0, result.output
    assert "## Risks\n\nSupply chain." in result.stdout
    assert "## Verbatim" in result.stdout


@pytest.mark.parametrize(
    ("text", "message"),
    [("[[section]\n", "not valid TOML"), ('[[section]]\nname = "A"\nprompt = "{doc}"', "uses {doc}")],
)
def test_cli_bad_sections_fail_before_any_call(
    cli: CliRunner, emulator: Emulator, tmp_path: Path, text: str, message: str
) -> None:
    before = emulator.stats.total
    result = invoke(cli, "-", "--sections", str(write(tmp_path, text)), stdin=DOCUMENT)
    assert result.exit_code == 2
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("error: ")
    assert "sections.toml" in line
    assert message in line
    assert emulator.stats.total == before


def test_cli_missing_document(cli: CliRunner) -> None:
    result = invoke(cli, "no-such-file.txt")
    assert result.exit_code == 2
    assert "no such file" in result.stderr
