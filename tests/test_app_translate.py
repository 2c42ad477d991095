"""Translation: languages in parallel, personas translating then voting, confidence and
consensus marking, one language failing while the others succeed, the merged report."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from quorum.apps.translate import (
    DEFAULT_PERSONAS,
    DISPUTED,
    FAILED,
    HIGH_CONSENSUS,
    TranslationResult,
    TranslationWorkflow,
    group_candidates,
    language_name,
    language_names,
)
from quorum.cli import translate as translate_cli
from quorum.engine import Budget
from quorum.errors import ConfigError
from quorum.llm import FakeProvider
from quorum.testing.emulator import Emulator

MODEL = "anthropic/claude-haiku-4-5"
TEXT = "Hello world"


def when(*words: str) -> str:
    """A regex that finds every word, in any order, anywhere in a request."""
    return "(?s)^" + "".join(f"(?=.*{w})" for w in words)


def translation(language: str, persona: str, text: str) -> dict[str, Any]:
    return {
        "match": when(f"Translate the following text into {language}", f"{persona} translator"),
        "reply": text,
    }


def ballot(language: str, persona: str, choice: str) -> dict[str, Any]:
    data = {"decision": choice, "confidence": "high", "reasoning": "scripted"}
    return {"match": when("Candidates", f"into {language}", f"{persona} translator"), "data": data}


RULES: list[dict[str, Any]] = [
    # French: formal and technical agree (candidate A), casual differs (B); the vote is 2 to 1.
    translation("French", "formal", "Bonjour le monde."),
    translation("French", "casual", "Salut tout le monde !"),
    translation("French", "technical", "bonjour le monde"),
    ballot("French", "casual", "B"),
    ballot("French", "formal|technical", "A"),
    # German: three different versions and a three-way split.
    translation("German", "formal", "Guten Tag, Welt."),
    translation("German", "casual", "Hallo Welt!"),
    translation("German", "technical", "Servus, Welt."),
    ballot("German", "formal", "A"),
    ballot("German", "casual", "B"),
    ballot("German", "technical", "C"),
    # Spanish: everyone writes the same, so nothing is voted on.
    {"match": "into Spanish", "reply": "Hola mundo"},
    # Italian: the casual translator fails; the other two agree.
    {"match": when("into Italian", "casual translator"), "error": "bad_request"},
    {"match": "into Italian", "reply": "Ciao mondo"},
    # Japanese: every call is refused.
    {"match": "into Japanese", "error": "bad_request"},
]


async def translate(languages: list[str], **options: Any) -> tuple[TranslationResult, FakeProvider]:
    llm = FakeProvider(rules=RULES)
    workflow = TranslationWorkflow(llm=llm, **options)
    return await workflow.run(TEXT, languages), llm


# -- the library -------------------------------------------------------------------------


async def test_three_languages_one_failing() -> None:
    result, _llm = await translate(["fr", "German", "ja"])
    fr, de, ja = (result.languages[name] for name in ("French", "German", "Japanese"))
    assert list(result.languages) == ["French", "German", "Japanese"]
    assert (fr.status, fr.winner, fr.translation) == (HIGH_CONSENSUS, "A", "Bonjour le monde.")
    assert fr.confidence == pytest.approx(2 / 3)
    assert [(c.label, c.personas) for c in fr.candidates] == [
        ("A", ("formal", "technical")),
        ("B", ("casual",)),
    ]
    assert fr.vote_counts == {"A": 2, "B": 1}
    assert (de.status, de.winner, de.confidence) == (DISPUTED, None, pytest.approx(1 / 3))
    assert de.translation == "Guten Tag, Welt."  # on a tie, the first tied candidate is shown
    assert (ja.status, ja.translation) == (FAILED, None)
    assert ja.error is not None
    assert "every translator failed" in ja.error
    assert "BadRequest" in ja.error
    assert result.failed == ["Japanese"]
    assert result.translations == {"French": "Bonjour le monde.", "German": "Guten Tag, Welt."}


async def test_the_threshold_decides_high_consensus_or_disputed() -> None:
    result, _ = await translate(["fr"], consensus_threshold=0.7)
    french = result.languages["French"]
    assert french.status == DISPUTED
    assert french.winner == "A"


async def test_identical_translations_need_no_vote() -> None:
    result, llm = await translate(["es"])
    spanish = result.languages["Spanish"]
    assert (spanish.status, spanish.confidence, spanish.votes) == (HIGH_CONSENSUS, 1.0, [])
    assert len(llm.calls) == 3  # three translations, no ballot


async def test_a_failing_translator_is_reported_and_the_others_decide() -> None:
    result, _ = await translate(["it"])
    italian = result.languages["Italian"]
    assert italian.translation == "Ciao mondo"
    assert italian.candidates[0].personas == ("formal", "technical")
    assert italian.confidence == pytest.approx(2 / 3)
    assert italian.status == HIGH_CONSENSUS
    assert set(italian.translator_errors) == {"casual"}


async def test_personas_translate_then_vote_on_candidate_labels() -> None:
    result, llm = await translate(["fr"])
    translations = [r for r in llm.calls if r.schema is None]
    votes = [r for r in llm.calls if r.schema is not None]
    assert {r.system for r in translations} == {p.system_prompt for p in DEFAULT_PERSONAS}
    assert all("into French" in r.text and TEXT in r.text for r in translations)
    assert len(votes) == 3
    assert votes[0].schema is not None
    assert votes[0].schema["properties"]["decision"]["enum"] == ["A", "B"]
    assert "A:\nBonjour le monde." in votes[0].text
    assert "B:\nSalut tout le monde !" in votes[0].text
    assert result.languages["French"].votes[0].voter_name == "formal"


async def test_the_merged_report_shows_every_language() -> None:
    result, _ = await translate(["fr", "de", "ja"])
    report = result.report()
    assert "3 languages: 1 high consensus, 1 disputed, 1 failed" in report
    assert "| French | high consensus | 67% | A: formal, technical |" in report
    assert "| German | disputed | 33% | A: formal (tie) |" in report
    assert "| Japanese | failed | – | – |" in report
    assert "## French: high consensus, confidence 67%" in report
    assert "**B** by casual: 1 vote\n\n> Salut tout le monde !" in report
    assert "## Japanese: failed\n\nThis language failed: TranslationError: every translator failed" in report


async def test_budget_and_events_reach_nested_calls() -> None:
    events: list[Any] = []
    budget = Budget(tokens=10**6)
    workflow = TranslationWorkflow(llm=FakeProvider(rules=RULES))
    await workflow.run(TEXT, ["fr", "es"], on_event=events.append, budget=budget)
    assert budget.spent_tokens > 0
    finished = [e for e in events if e.kind == "finished"]
    assert sorted({e.run for e in finished}) == ["", "French", "Spanish"]
    assert sum(e.run == "French" for e in finished) == 6  # 3 translations and 3 votes


def test_language_codes_and_names() -> None:
    assert [language_name(s) for s in ("fr", "DE", "pt_BR", "japanese", "Klingon")] == [
        "French",
        "German",
        "Brazilian Portuguese",
        "Japanese",
        "Klingon",
    ]
    assert language_name("tl") == "Filipino"  # any registered tag, named in English
    with pytest.raises(ConfigError, match="'xx' is not a language code or name"):
        language_name("xx")
    with pytest.raises(ConfigError, match="not a language code or name"):
        language_name("{input}")
    with pytest.raises(ConfigError, match=r"did you mean French\?"):
        language_name("Frnch")
    with pytest.raises(ConfigError, match=r"did you mean fr \(French\)\?"):
        language_name("fr-notalang")
    with pytest.raises(ConfigError, match="French is asked for twice"):
        language_names(["fr", "French"])
    with pytest.raises(ConfigError, match="at least one"):
        language_names([" "])


def test_identical_wordings_are_one_candidate() -> None:
    candidates = group_candidates(
        [("formal", "Hola, mundo."), ("casual", "hola mundo"), ("technical", "Hey")]
    )
    assert [(c.label, c.text, c.personas) for c in candidates] == [
        ("A", "Hola, mundo.", ("formal", "casual")),
        ("B", "Hey", ("technical",)),
    ]


@pytest.mark.parametrize(
    ("options", "message"),
    [({"personas": []}, "at least one persona"), ({"consensus_threshold": 0}, "consensus threshold")],
)
def test_bad_settings_are_refused(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        TranslationWorkflow(llm=FakeProvider(), **options)


# -- the command, on the wire ----------------------------------------------------------------


@pytest.fixture(scope="module")
def emulator() -> Iterator[Emulator]:
    with Emulator(script=RULES).in_thread() as emu:
        yield emu


def invoke(runner: CliRunner, *args: str, stdin: str | None = None) -> Any:
    app = typer.Typer()
    app.command("translate")(translate_cli.command)
    return runner.invoke(app, ["--model", MODEL, *args], input=stdin)


def test_cli_report_with_one_language_failing(cli: CliRunner) -> None:
    result = invoke(cli, TEXT, "--to", "fr,de,ja")
    assert result.exit_code == 1  # Japanese failed; French and German are still reported
    assert "## French: high consensus, confidence 67%\n\nBonjour le monde." in result.stdout
    assert "## German: disputed, confidence 33%" in result.stdout
    assert "## Japanese: failed" in result.stdout
    assert "calls:" in result.stderr
    assert "saved" in result.stderr


def test_cli_json_from_a_file(cli: CliRunner, tmp_path: Path) -> None:
    source = tmp_path / "greeting.txt"
    source.write_text(TEXT)
    result = invoke(cli, str(source), "--to", "Spanish", "--json")
    assert result.exit_code == 0, result.output
    (spanish,) = json.loads(result.stdout)["languages"]
    assert (spanish["language"], spanish["status"], spanish["translation"]) == (
        "Spanish",
        HIGH_CONSENSUS,
        "Hola mundo",
    )
    assert spanish["confidence"] == 1.0


def test_cli_threshold(cli: CliRunner) -> None:
    result = invoke(cli, TEXT, "--to", "fr", "--threshold", "0.7", "--json")
    (french,) = json.loads(result.stdout)["languages"]
    assert (french["status"], french["winner"]) == (DISPUTED, "A")


def test_cli_unknown_language_fails_before_any_call(cli: CliRunner, emulator: Emulator) -> None:
    before = emulator.stats.total
    result = invoke(cli, TEXT, "--to", "fr,zz")
    assert result.exit_code == 2
    assert "--to: 'zz' is not a language code or name" in result.stderr
    assert emulator.stats.total == before


def test_cli_refuses_a_language_that_does_not_exist(cli: CliRunner, emulator: Emulator) -> None:
    before = emulator.stats.total
    result = invoke(cli, "hello", "--to", "zz-notalang")
    assert result.exit_code == 2
    assert "'zz-notalang' is not a language code or name" in result.stderr
    near = invoke(cli, "hello", "--to", "Germn")
    assert "did you mean German?" in near.stderr
    assert emulator.stats.total == before
