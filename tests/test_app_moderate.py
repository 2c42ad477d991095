"""Moderation: verdicts from scripted moderators, streaming and order, unreadable lines,
options and threshold, adaptive stopping; the library with the fake provider, the
command through the emulator on the wire."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from quorum.apps.moderate import MODERATORS, Item, Verdict, item_from_json, moderate, read_jsonl
from quorum.cli import moderate as moderate_cli
from quorum.errors import ConfigError
from quorum.llm import FakeProvider
from quorum.patterns import Adaptive
from quorum.testing.emulator import Emulator

MODEL = "anthropic/claude-haiku-4-5"


def answer(decision: str) -> dict[str, str]:
    return {"decision": decision, "confidence": "high", "reasoning": "scripted"}


def when(*words: str) -> str:
    """A regex that finds every word, in any order, anywhere in a request."""
    return "(?s)^" + "".join(f"(?=.*{w})" for w in words)


# Moderators are told apart by their system prompts ("strict content moderator"...).
RULES: list[dict[str, Any]] = [
    {"match": when("rocks for brains", "strict content"), "data": answer("rejected")},
    {"match": when("rocks for brains", "lenient content"), "data": answer("acceptable")},
    {"match": "rocks for brains", "data": answer("needs_review")},
    {"match": "slow text", "data": answer("acceptable"), "latency": 0.2},
    {"match": "broken text", "error": "bad_request"},
    {"match": "keep or remove", "data": answer("keep")},
    {"match": when("remove me", "strict content"), "data": answer("keep")},
    {"match": "remove me", "data": answer("remove")},
    {"match": "Classify", "data": answer("acceptable")},
]
RUDE = "The people who made it must have rocks for brains. We should organize a protest!"


def fake(**kw: Any) -> FakeProvider:
    return FakeProvider(rules=RULES, **kw)


async def verdicts(texts: Any, **options: Any) -> list[Verdict]:
    async with moderate(texts, **options) as stream:
        return [verdict async for verdict in stream]


# -- the library -------------------------------------------------------------------------


async def test_each_text_gets_the_moderators_vote() -> None:
    llm = fake()
    first, second = await verdicts(["Nice post, thanks!", RUDE], llm=llm, ordered=True)
    assert (first.id, first.verdict, first.agreement, first.consensus) == (1, "acceptable", 1.0, True)
    assert second.verdict == "needs_review"
    assert second.vote_counts == {"rejected": 1, "acceptable": 1, "needs_review": 3}
    assert second.agreement == pytest.approx(0.6)
    assert second.consensus
    assert second.decisions["strict_moderator"] == "rejected"
    assert second.decisions["lenient_moderator"] == "acceptable"
    assert list(second.decisions) == [v.name for v in MODERATORS]
    assert len(llm.calls) == 10


async def test_chapter_prompt_and_moderators_are_sent() -> None:
    llm = fake()
    await verdicts([RUDE], llm=llm)
    request = llm.calls[0]
    assert "Classify the following user content:" in request.text
    assert "Is this content acceptable, needs_review, or should be rejected?" in request.text
    systems = {r.system for r in llm.calls}
    assert systems == {v.system_prompt for v in MODERATORS}
    assert {r.temperature for r in llm.calls} == {0.3, 0.5, 0.7}


async def test_verdicts_stream_as_they_finish_or_in_input_order() -> None:
    texts = ["a slow text", "a quick one"]
    finished = await verdicts(texts, llm=fake())
    assert [v.id for v in finished] == [2, 1]  # the quick text is reported first
    ordered = await verdicts(texts, llm=fake(), ordered=True)
    assert [v.id for v in ordered] == [1, 2]


@pytest.mark.parametrize("journaled", [False, True])
async def test_the_run_options_reach_the_stream_with_or_without_a_journal(
    journaled: bool, tmp_path: Path
) -> None:
    journal = tmp_path / "moderate.journal" if journaled else None
    # One text at a time: the slow first text is reported before the quick second one.
    finished = await verdicts(["a slow text", "a quick one"], llm=fake(), concurrency=1, journal=journal)
    assert [v.id for v in finished] == [1, 2]


async def test_an_unreadable_item_gets_an_error_verdict_and_the_rest_go_on() -> None:
    llm = fake()
    items = list(read_jsonl(['{"id": "a", "text": "fine"}', "{not json", '"also fine"']))
    a, bad, c = await verdicts(items, llm=llm, ordered=True)
    assert (a.id, a.status, a.verdict) == ("a", "ok", "acceptable")
    assert (bad.status, bad.line, bad.verdict) == ("error", 2, None)
    assert bad.error is not None
    assert bad.error.startswith("not valid JSON")
    assert (c.id, c.line, c.status) == (3, 3, "ok")
    assert len(llm.calls) == 10  # nothing was asked about the unreadable line


async def test_every_moderator_failing_is_an_error_verdict() -> None:
    (verdict,) = await verdicts(["a broken text"], llm=fake())
    assert verdict.status == "error"
    assert not verdict.ok
    assert verdict.failed == 5
    assert verdict.verdict is None
    assert "BadRequest" in (verdict.error or "")
    assert set(verdict.vote_errors) == {v.name for v in MODERATORS}


async def test_options_and_threshold() -> None:
    (verdict,) = await verdicts(["remove me"], llm=fake(), options=["keep", "remove"], threshold=0.9)
    assert verdict.verdict == "remove"
    assert verdict.agreement == pytest.approx(0.8)
    assert not verdict.consensus  # 4 of 5 is below 0.9
    llm = fake()
    await verdicts(["x"], llm=llm, options=["keep", "remove"])
    assert "Which of these fits it: keep, remove?" in llm.calls[0].text


async def test_adaptive_voting_stops_once_the_winner_is_settled() -> None:
    adaptive = Adaptive(wave=3, confidence=None)
    (verdict,) = await verdicts(["Nice post"], llm=fake(), adaptive=adaptive)
    assert verdict.verdict == "acceptable"
    assert verdict.stopped_early is not None
    assert verdict.stopped_early.startswith("decided")
    # Three unanimous votes settle it: the other two could not change the winner.
    assert verdict.vote_counts == {"acceptable": 3}
    assert len(verdict.decisions) == 3


@pytest.mark.parametrize(
    ("options", "message"),
    [(["yes"], "at least two"), (["yes", "Yes"], "repeat"), (["yes", " "], "non-empty")],
)
def test_a_bad_ballot_is_refused_before_any_call(options: list[str], message: str) -> None:
    llm = fake()
    with pytest.raises(ConfigError, match=message):
        moderate(["text"], llm=llm, options=options)
    assert llm.calls == []


def test_a_single_string_is_not_taken_for_many_texts() -> None:
    with pytest.raises(ConfigError, match="pass a list of texts"):
        moderate("one text", llm=fake())


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ('{"id": "x", "text": "hi"}', Item("x", "hi", 7)),
        ('{"text": "hi"}', Item(7, "hi", 7)),
        ('"hi"', Item(7, "hi", 7)),
        ("   ", None),
    ],
)
def test_json_lines_that_read(line: str, expected: Item | None) -> None:
    assert item_from_json(line, 7) == expected


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        ("{oops", "not valid JSON"),
        ("[1, 2]", "a JSON list"),
        ('{"id": 1}', 'no non-empty "text"'),
        ('{"id": [1], "text": "hi"}', 'an "id" that is neither'),
        ('""', "an empty text"),
    ],
)
def test_json_lines_that_do_not(line: str, problem: str) -> None:
    item = item_from_json(line, 7)
    assert item is not None
    assert item.line == 7
    assert item.problem is not None
    assert item.problem.startswith(problem)


# -- the command, on the wire ----------------------------------------------------------------


@pytest.fixture(scope="module")
def emulator() -> Iterator[Emulator]:
    with Emulator(script=RULES).in_thread() as emu:
        yield emu


def invoke(runner: CliRunner, *args: str, stdin: str | None = None) -> Any:
    app = typer.Typer()
    app.command("moderate")(moderate_cli.command)
    return runner.invoke(app, ["--model", MODEL, *args], input=stdin)


def lines(stdout: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stdout.splitlines()]


def test_cli_writes_one_verdict_line_per_text(cli: CliRunner) -> None:
    result = invoke(cli, "Nice post, thanks!", RUDE, "--ordered")
    assert result.exit_code == 0, result.output
    first, second = lines(result.stdout)
    assert (first["id"], first["verdict"], first["consensus"]) == (1, "acceptable", True)
    assert second["verdict"] == "needs_review"
    assert second["votes_used"] == 5
    assert second["decisions"]["strict_moderator"] == "rejected"
    assert set(first) >= {"agreement", "vote_counts", "tied", "invalid", "failed", "index"}
    assert "moderated 2 texts (2 ok)" in result.stderr
    assert "calls: 10 tasks (10 ok)" in result.stderr
    assert "saved" in result.stderr


def test_cli_keeps_input_order_with_ordered(cli: CliRunner) -> None:
    unordered = invoke(cli, "a slow text", "a quick one")
    assert [v["id"] for v in lines(unordered.stdout)] == [2, 1]
    ordered = invoke(cli, "a slow text", "a quick one", "--ordered")
    assert [v["id"] for v in lines(ordered.stdout)] == [1, 2]


def test_cli_reports_a_malformed_line_and_judges_the_others(cli: CliRunner, tmp_path: Path) -> None:
    source = tmp_path / "comments.jsonl"
    source.write_text('{"id": "c1", "text": "hello"}\n{"id": "c2", "text": \n\n"bare text"\n')
    result = invoke(cli, "--input", str(source), "--ordered")
    assert result.exit_code == 1
    good, bad, bare = lines(result.stdout)
    assert (good["id"], good["status"], good["verdict"]) == ("c1", "ok", "acceptable")
    assert (bad["line"], bad["status"]) == (2, "error")
    assert "not valid JSON" in bad["error"]
    assert (bare["id"], bare["line"], bare["status"]) == (4, 4, "ok")
    assert "comments.jsonl line 2: not valid JSON" in result.stderr


def test_cli_reads_stdin_one_text_per_line(cli: CliRunner) -> None:
    result = invoke(cli, "-", "--ordered", stdin="Nice post\n\n" + RUDE + "\n")
    assert result.exit_code == 0, result.output
    assert [(v["id"], v["verdict"]) for v in lines(result.stdout)] == [(1, "acceptable"), (3, "needs_review")]
    piped = invoke(cli, "--ordered", stdin="Nice post\n")  # no arguments, piped input
    assert [v["verdict"] for v in lines(piped.stdout)] == ["acceptable"]


def test_cli_reads_json_lines_from_stdin(cli: CliRunner) -> None:
    result = invoke(cli, "--input", "-", stdin='{"id": "s1", "text": "hello"}\n')
    assert [v["id"] for v in lines(result.stdout)] == ["s1"]


def test_cli_options_threshold_and_voters(cli: CliRunner) -> None:
    result = invoke(cli, "remove me", "--options", "keep,remove", "--threshold", "0.9", "--voters", "3")
    assert result.exit_code == 0, result.output
    (verdict,) = lines(result.stdout)
    assert verdict["vote_counts"] == {"keep": 1, "remove": 2}
    assert verdict["verdict"] == "remove"
    assert verdict["consensus"] is False
    assert list(verdict["decisions"]) == ["strict_moderator", "balanced_moderator", "lenient_moderator"]


def test_cli_adaptive_stops_once_settled(cli: CliRunner) -> None:
    result = invoke(cli, "Nice post", "--adaptive")
    (verdict,) = lines(result.stdout)
    assert verdict["verdict"] == "acceptable"
    assert verdict["stopped_early"] is not None
    # Settled once two agree (three more could overturn that with P = 1/20); a vote
    # already back by then is counted too, never thrown away.
    assert set(verdict["vote_counts"]) == {"acceptable"}
    assert 2 <= verdict["vote_counts"]["acceptable"] <= 5


def test_cli_json_writes_one_document(cli: CliRunner) -> None:
    result = invoke(cli, "Nice post", "--json")
    document = json.loads(result.stdout)
    assert [v["verdict"] for v in document["verdicts"]] == ["acceptable"]
    assert document["summary"]["texts"] == {"ok": 1}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--options", "only"], "at least two"),
        (["a", "--input", "x.jsonl"], "not both"),
        (["--input", "missing.jsonl"], "no such file"),
        (["a", "-"], "must be the only argument"),
    ],
)
def test_cli_mistakes_are_one_line_and_exit_2(cli: CliRunner, args: list[str], message: str) -> None:
    result = invoke(cli, *(args if "--options" not in args else ["text", *args]))
    assert result.exit_code == 2
    assert message in result.stderr
    assert "Traceback" not in result.output


def test_the_progress_display_leaves_stdout_alone(capsys: pytest.CaptureFixture[str]) -> None:
    import sys

    from rich.console import Console

    from quorum.cli.progress import ProgressDisplay
    from quorum.engine.events import Event, EventKind

    display = ProgressDisplay(
        "t", console=Console(stderr=True, force_terminal=True), delay_s=0.0, enabled=True
    )
    with display:
        display.on_event(Event(EventKind.QUEUED, "task_0", 0, 0.0))
        sys.stdout.write("a verdict\n")
    out, err = capsys.readouterr()
    assert out == "a verdict\n"
    assert "a verdict" not in err
