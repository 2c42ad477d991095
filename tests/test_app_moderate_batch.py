"""``quorum moderate --batch-api``: every vote through the provider's batch API on the
emulator, verdicts equal to the online run's, the batch price, and a kill resumed
without a second batch."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from batch_kills import kill_while_the_batch_runs_then_resume
from quorum.apps.moderate import MODERATORS, Item, moderate, plan_votes
from quorum.cli import moderate as moderate_cli
from quorum.engine.batch_ledger import BatchLedger
from quorum.engine.connection import connect
from quorum.errors import ConfigError
from quorum.llm import FakeProvider
from quorum.patterns import Adaptive
from quorum.testing.emulator import Emulator

MODEL = "anthropic/claude-haiku-4-5"


def answer(decision: str) -> dict[str, str]:
    return {"decision": decision, "confidence": "high", "reasoning": "scripted"}


def when(*words: str) -> str:
    return "(?s)^" + "".join(f"(?=.*{w})" for w in words)


RULES: list[dict[str, Any]] = [
    {"match": when("rocks for brains", "strict content"), "data": answer("rejected")},
    {"match": when("rocks for brains", "lenient content"), "data": answer("acceptable")},
    {"match": "rocks for brains", "data": answer("needs_review")},
    {"match": when("borderline", "policies"), "error": "bad_request"},
    {"match": "borderline", "data": answer("needs_review")},
    {"match": "Classify", "data": answer("acceptable")},
]
TEXTS = [
    {"id": "c1", "text": "Nice post, thanks!"},
    {"id": "c2", "text": "The people who made it must have rocks for brains."},
    {"id": "c3", "text": "A borderline joke about the referee."},
    "not json at all",
    {"id": "c5", "text": "See you at the meetup."},
]


@pytest.fixture(scope="module")
def emulator() -> Iterator[Emulator]:
    with Emulator(script=RULES, batch_time=0.05).in_thread() as emu:
        yield emu


def source(tmp_path: Path) -> Path:
    path = tmp_path / "comments.jsonl"
    lines = [x if isinstance(x, str) else json.dumps(x) for x in TEXTS]
    path.write_text("\n".join(lines) + "\n")
    return path


def invoke(runner: CliRunner, *args: str, model: str = MODEL) -> Any:
    app = typer.Typer()
    app.command("moderate")(moderate_cli.command)
    return runner.invoke(app, ["--model", model, "--no-cache", *args])


def verdicts(stdout: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stdout.splitlines()]


def test_the_batch_run_gives_the_online_verdicts_at_half_the_price(
    cli: CliRunner, emulator: Emulator, tmp_path: Path
) -> None:
    path = source(tmp_path)
    online = invoke(cli, "--input", str(path), "--ordered", "--json")
    created, billed = emulator.stats.batches_created, emulator.stats.batch_cost_usd
    batched = invoke(
        cli, "--input", str(path), "--ordered", "--json", "--batch-api", "--poll", "0.05",
        "--journal", str(tmp_path / "j.db"),
    )  # fmt: skip
    assert batched.exit_code == online.exit_code == 1, batched.output  # the unreadable line
    assert emulator.stats.batches_created == created + 1  # every vote in one batch
    first, second = json.loads(online.stdout), json.loads(batched.stdout)
    error = second["verdicts"][2]["vote_errors"]["policy_expert"]
    assert error.startswith("BadRequest: anthropic: batch item answered HTTP 400")
    second["verdicts"][2]["vote_errors"]["policy_expert"] = error.replace("batch item answered", "answered")
    assert second["verdicts"] == first["verdicts"]  # same votes, same tallies, same errors
    # the cost is what the batch billed, at half the price (the online run read its shared
    # prompt prefix from the prompt cache, so it cost less than twice as much)
    assert second["summary"]["cost_usd"] == pytest.approx(emulator.stats.batch_cost_usd - billed)
    assert second["summary"]["cost_usd"] < first["summary"]["cost_usd"]
    assert second["summary"]["batch"]["cost_usd"] == pytest.approx(second["summary"]["cost_usd"])
    assert second["summary"]["batch"]["batches_created"] == 1
    assert "1 batch(es) created" in batched.stderr
    assert "at the batch price" in batched.stderr


def test_a_resumed_batch_run_sends_nothing_again(cli: CliRunner, emulator: Emulator, tmp_path: Path) -> None:
    path, journal = source(tmp_path), str(tmp_path / "j.db")
    args = ["--input", str(path), "--ordered", "--batch-api", "--poll", "0.05", "--journal", journal]
    first = invoke(cli, *args)
    created = emulator.stats.batches_created
    again = invoke(cli, *args)
    assert emulator.stats.batches_created == created  # the journal has every verdict
    assert verdicts(again.stdout) == verdicts(first.stdout)


def test_adaptive_voting_and_a_budget_are_refused_with_the_batch_api(cli: CliRunner) -> None:
    adaptive = invoke(cli, "some text", "--batch-api", "--adaptive")
    assert adaptive.exit_code == 2
    assert "drop --adaptive to use the batch API" in adaptive.stderr
    budget = invoke(cli, "some text", "--batch-api", "--budget", "1")
    assert budget.exit_code == 2
    assert "drop --budget with --batch-api" in budget.stderr
    alone = invoke(cli, "some text", "--fallback-online")
    assert alone.exit_code == 2
    assert "go with --batch-api" in alone.stderr


async def test_planned_votes_are_named_by_text_and_moderator_and_cost_nothing() -> None:
    provider = FakeProvider()
    items = [Item("a", "first text"), Item("b", "second text"), Item(3, line=3, problem="not JSON")]
    planned = await plan_votes(items, llm=connect(provider), voters=MODERATORS[:2])
    assert list(planned) == [f"{i}:{v.name}" for i in ("a", "b") for v in MODERATORS[:2]]
    assert planned["a:strict_moderator"].system == MODERATORS[0].system_prompt
    assert provider.calls == []  # nothing was sent


def test_the_library_refuses_adaptive_votes_from_batch_answers() -> None:
    with pytest.raises(ConfigError, match="drop --adaptive"):
        moderate(["text"], llm=FakeProvider(), adaptive=Adaptive(), answers={})


def test_sigkill_while_the_batch_runs_then_resume_creates_no_second_batch(tmp_path: Path) -> None:
    path, journal, out = source(tmp_path), tmp_path / "j.db", tmp_path / "verdicts.jsonl"
    command = [sys.executable, "-m", "quorum.cli.main", "moderate", "--input", str(path), "--ordered"]
    command += ["-m", MODEL, "--no-cache", "--batch-api", "--poll", "0.05", "--journal", str(journal)]
    command += ["-o", str(out)]
    with Emulator(script=RULES, batch_time=3.0).in_thread() as emu:
        done = kill_while_the_batch_runs_then_resume(command, emu)
        assert emu.stats.batch_items == 4 * len(MODERATORS)  # each vote sent once
    assert done.returncode == 1, done.stderr
    with BatchLedger(journal) as ledger:
        assert len(ledger.claimed()) == 1
    written = verdicts(out.read_text())
    assert [v["id"] for v in written] == ["c1", "c2", "c3", 4, "c5"]
    assert [v["verdict"] for v in written] == [
        "acceptable",
        "needs_review",
        "needs_review",
        None,
        "acceptable",
    ]


def test_votes_no_batch_answered_are_asked_online_with_fallback_online(
    cli: CliRunner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "two.jsonl"
    path.write_text("".join(json.dumps(x) + "\n" for x in TEXTS[:2]))
    with Emulator(script=RULES, batch_time=0.02, batch_expired=1.0).in_thread() as emu:
        for name, value in emu.env().items():
            monkeypatch.setenv(name, value)
        online = invoke(cli, "--input", str(path), "--ordered")
        batched = invoke(
            cli, "--input", str(path), "--ordered", "--batch-api", "--fallback-online", "--poll", "0.02"
        )
        assert emu.stats.batches_created == 3  # every vote expired in each of three batches
    assert batched.exit_code == 0, batched.output
    assert verdicts(batched.stdout) == verdicts(online.stdout)
    assert "10 online" in batched.stderr
    assert "no journal: the batches are followed in a temporary file" in batched.stderr


def test_through_openai_batches_the_verdicts_are_the_same_at_exactly_half_the_price(
    cli: CliRunner, tmp_path: Path
) -> None:
    path = source(tmp_path)
    args = ["--input", str(path), "--ordered", "--json"]
    online = invoke(cli, *args, model="openai/gpt-4o-mini")
    batched = invoke(cli, *args, "--batch-api", "--poll", "0.05", model="openai/gpt-4o-mini")
    assert "batch batch_" in batched.stderr  # an OpenAI batch id
    first, second = json.loads(online.stdout), json.loads(batched.stdout)
    for verdict in second["verdicts"]:  # the batch's error says it came from a batch item
        verdict["vote_errors"] = {
            k: v.replace("batch item answered", "answered") for k, v in verdict["vote_errors"].items()
        }
    assert second["verdicts"] == first["verdicts"]
    assert second["summary"]["cost_usd"] == pytest.approx(first["summary"]["cost_usd"] / 2)
