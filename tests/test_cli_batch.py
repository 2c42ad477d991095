"""``quorum batch`` and ``quorum cache`` on the emulator: formats, errors, resume, stop."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from quorum.cli.main import app
from quorum.testing.emulator import Emulator

MODEL = "anthropic/claude-haiku-4-5"
SCHEMA = {"type": "object", "properties": {"verdict": {"type": "string", "enum": ["yes", "no"]}}}
RULES = [{"match": "capital of France", "reply": "Paris"}]
OPENAI_LINE = {
    "custom_id": "oa-1",
    "method": "POST",
    "url": "/v1/chat/completions",
    "body": {
        "model": "gpt-4o-mini",
        "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Is it?"}],
        "max_tokens": 20,
        "response_format": {"type": "json_schema", "json_schema": {"name": "v", "schema": SCHEMA}},
    },
}
ANTHROPIC_LINE = {
    "custom_id": "an-1",
    "params": {
        "model": "claude-haiku-4-5",
        "max_tokens": 20,
        "system": [{"type": "text", "text": "Answer in one word."}],
        "messages": [{"role": "user", "content": "The capital of France?"}],
    },
}
SIMPLE_LINE = {"id": 7, "prompt": "Is it?", "schema": SCHEMA}


@pytest.fixture(scope="module")
def emulator() -> Iterator[Emulator]:
    with Emulator(script=RULES).in_thread() as emu:
        yield emu


@pytest.fixture(autouse=True)
def own_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QUORUM_CACHE_DIR", str(tmp_path / "cache"))


def write(path: Path, *lines: Any) -> Path:
    path.write_text("".join((x if isinstance(x, str) else json.dumps(x)) + "\n" for x in lines))
    return path


def results(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_the_three_formats_and_a_structured_answer(cli: CliRunner, tmp_path: Path) -> None:
    source = write(tmp_path / "in.jsonl", OPENAI_LINE, ANTHROPIC_LINE, SIMPLE_LINE)
    out = tmp_path / "out.jsonl"
    done = cli.invoke(app, ["batch", str(source), "-o", str(out), "--ordered", "--model", MODEL])
    assert done.exit_code == 0, done.output
    openai, anthropic, simple = results(out)
    assert [r["custom_id"] for r in (openai, anthropic, simple)] == ["oa-1", "an-1", "7"]
    assert {r["status"] for r in (openai, anthropic, simple)} == {"ok"}
    assert anthropic["text"] == "Paris"
    assert openai["data"] == {"verdict": "yes"}
    assert simple["data"] == {"verdict": "yes"}
    assert set(simple) == {"custom_id", "status", "text", "data", "usage", "cost", "error", "cached"}
    assert simple["usage"]["input_tokens"] > 0
    assert "3 ok, 0 error" in done.stderr


def test_the_lines_own_models_are_used_without_model(
    cli: CliRunner, tmp_path: Path, emulator: Emulator
) -> None:
    source = write(tmp_path / "in.jsonl", OPENAI_LINE, ANTHROPIC_LINE)
    before = (emulator.stats.count(path="/v1/chat/completions"), emulator.stats.count(path="/v1/messages"))
    done = cli.invoke(app, ["batch", str(source), "-o", str(tmp_path / "out.jsonl")])
    assert done.exit_code == 0, done.output
    after = (emulator.stats.count(path="/v1/chat/completions"), emulator.stats.count(path="/v1/messages"))
    assert (after[0] - before[0], after[1] - before[1]) == (1, 1)


def test_a_malformed_line_is_an_error_result_and_the_job_goes_on(cli: CliRunner, tmp_path: Path) -> None:
    source = write(
        tmp_path / "in.jsonl",
        "{not json",
        {"custom_id": "x", "params": {"messages": [{"role": "user", "content": "hi"}], "top_k": 5}},
        {"id": "ok", "prompt": "The capital of France?"},
        '"a string"',
        {"id": "ok", "prompt": "again"},
    )
    out = tmp_path / "out.jsonl"
    done = cli.invoke(app, ["batch", str(source), "-o", str(out), "--ordered", "--model", MODEL])
    assert done.exit_code == 1  # some lines failed
    rows = results(out)
    assert [r["status"] for r in rows] == ["error", "error", "ok", "error", "error"]
    assert "line 1: not JSON" in rows[0]["error"]
    assert "top_k" in rows[1]["error"]
    assert "expected an object" in rows[3]["error"]
    assert "already used on line 3" in rows[4]["error"]
    assert len({r["custom_id"] for r in rows}) == 5


def test_stdin_to_stdout(cli: CliRunner, tmp_path: Path) -> None:
    stdin = json.dumps({"id": "a", "prompt": "The capital of France?"}) + "\n"
    done = cli.invoke(app, ["batch", "-", "-o", "-", "--model", MODEL], input=stdin)
    assert done.exit_code == 0, done.output
    (row,) = [json.loads(line) for line in done.stdout.splitlines()]
    assert (row["custom_id"], row["text"]) == ("a", "Paris")


def test_a_rerun_calls_nothing_a_restart_reads_the_cache_and_no_cache_calls(
    cli: CliRunner, tmp_path: Path, emulator: Emulator
) -> None:
    source = write(tmp_path / "in.jsonl", *({"id": i, "prompt": f"q {i}"} for i in range(5)))
    command = ["batch", str(source), "-o", str(tmp_path / "out.jsonl"), "--model", MODEL, "--json"]
    runs = []
    for extra in ([], [], ["--restart"], ["--restart", "--no-cache"]):
        before = emulator.stats.count(path="/v1/messages")
        done = cli.invoke(app, [*command, *extra])
        assert done.exit_code == 0, done.output
        summary = json.loads(done.stdout.splitlines()[-1])
        runs.append(
            (emulator.stats.count(path="/v1/messages") - before, summary["resumed"], summary["cache_hits"])
        )
    assert runs == [(5, 0, 0), (0, 5, 0), (0, 0, 5), (5, 0, 0)]
    assert len(results(tmp_path / "out.jsonl")) == 5


def test_a_changed_line_under_the_same_id_is_an_error_naming_it(cli: CliRunner, tmp_path: Path) -> None:
    source = write(tmp_path / "in.jsonl", {"id": "q1", "prompt": "one"})
    out = ["-o", str(tmp_path / "out.jsonl"), "--model", MODEL]
    assert cli.invoke(app, ["batch", str(source), *out]).exit_code == 0
    write(source, {"id": "q1", "prompt": "one, changed"})
    done = cli.invoke(app, ["batch", str(source), *out])
    assert done.exit_code == 2
    assert "'q1' changed" in done.stderr
    assert "--restart" in done.stderr
    assert cli.invoke(app, ["batch", str(source), *out, "--restart"]).exit_code == 0


def test_cache_stats_clear_and_prune(cli: CliRunner, tmp_path: Path) -> None:
    source = write(tmp_path / "in.jsonl", {"id": "a", "prompt": "x"}, {"id": "b", "prompt": "y"})
    assert (
        cli.invoke(app, ["batch", str(source), "-o", str(tmp_path / "o.jsonl"), "-m", MODEL]).exit_code == 0
    )
    stats = cli.invoke(app, ["cache", "stats", "--json"])
    assert json.loads(stats.stdout)["entries"] == 2
    assert "deleted 0" in cli.invoke(app, ["cache", "prune", "--older-than", "30d"]).stdout
    bad = cli.invoke(app, ["cache", "prune", "--older-than", "soon"])
    assert bad.exit_code == 2
    assert "30d" in bad.stderr
    assert "deleted 2" in cli.invoke(app, ["cache", "clear"]).stdout


# -- graceful stop, in a subprocess ---------------------------------------------------------------


def start(tmp_path: Path, emu: Emulator, items: int) -> tuple[subprocess.Popen[str], list[str]]:
    source = write(tmp_path / "in.jsonl", *({"id": f"s{i}", "prompt": f"q {i}"} for i in range(items)))
    src = str(Path(__file__).resolve().parents[1] / "src")
    env = {**os.environ, **emu.env(), "PYTHONPATH": src, "QUORUM_CACHE_DIR": str(tmp_path / "cache")}
    command = [
        sys.executable,
        "-m",
        "quorum.cli.main",
        "batch",
        str(source),
        "-o",
        str(tmp_path / "out.jsonl"),
    ]
    command += ["--model", MODEL, "--concurrency", "4"]
    proc = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return proc, command


def wait_for_calls(emu: Emulator, n: int) -> None:
    deadline = time.monotonic() + 30
    while emu.stats.in_flight < n and time.monotonic() < deadline:
        time.sleep(0.01)


@pytest.mark.timeout(60)
def test_first_signal_lets_calls_in_flight_finish_and_nothing_is_paid_twice(tmp_path: Path) -> None:
    with Emulator(latency=0.5).in_thread() as emu:
        proc, command = start(tmp_path, emu, 40)
        wait_for_calls(emu, 4)
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=30)
        assert proc.returncode == 130, stderr
        # 4 unless a call ended between the emulator's count and the signal (busy machine)
        assert re.search(r"stopping: [1-4] in flight", stderr), stderr
        assert "run the same command again to resume" in stderr
        paid = emu.stats.count(path="/v1/messages")
        assert paid < 40
        assert emu.stats.aborted == 0  # every call in flight was let finish
        assert not (tmp_path / "out.jsonl").exists()  # only a complete output gets its name
        src = str(Path(__file__).resolve().parents[1] / "src")
        env = {**os.environ, **emu.env(), "PYTHONPATH": src, "QUORUM_CACHE_DIR": str(tmp_path / "nocache")}
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60, check=False)
        assert done.returncode == 0, done.stderr
        assert emu.stats.count(path="/v1/messages") == 40  # the stopped run's answers were kept
        assert len(results(tmp_path / "out.jsonl")) == 40


@pytest.mark.timeout(60)
def test_second_signal_cancels_the_calls_in_flight(tmp_path: Path) -> None:
    with Emulator(latency=5.0).in_thread() as emu:
        proc, _ = start(tmp_path, emu, 20)
        wait_for_calls(emu, 4)
        proc.send_signal(signal.SIGINT)
        assert proc.stderr is not None
        first = ""
        while "Ctrl-C again" not in first and (line := proc.stderr.readline()):
            first += line  # two signals in one moment would count as one
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=20)
        assert proc.returncode == 130, first + stderr
        assert "resume" in stderr
        assert emu.stats.count(path="/v1/messages", status=200) == 0  # nothing answered
        deadline = time.monotonic() + 5  # the emulator notes a closed connection in its own time
        while emu.stats.aborted < 4 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert emu.stats.aborted == 4  # the four in flight were cancelled


def test_a_budget_stop_leaves_a_partial_output_and_a_resumable_job(
    cli: CliRunner, tmp_path: Path, emulator: Emulator
) -> None:
    source = write(tmp_path / "in.jsonl", *({"id": i, "prompt": f"budget {i}"} for i in range(30)))
    out = tmp_path / "out.jsonl"
    command = ["batch", str(source), "-o", str(out), "--model", MODEL, "--concurrency", "2"]
    before = emulator.stats.count(path="/v1/messages")
    stopped = cli.invoke(app, [*command, "--budget", "0.000001"])
    assert stopped.exit_code == 1
    assert "stopped early" in stopped.stderr
    assert "run the same command again to resume" in stderr_of(stopped)
    assert not out.exists()
    assert (tmp_path / "out.jsonl.partial").exists()
    paid = emulator.stats.count(path="/v1/messages") - before
    assert 0 < paid < 30
    done = cli.invoke(app, command)
    assert done.exit_code == 0, done.output
    assert emulator.stats.count(path="/v1/messages") - before == 30  # nothing paid twice
    assert sorted(r["custom_id"] for r in results(out)) == sorted(str(i) for i in range(30))


def stderr_of(result: Any) -> str:
    return " ".join(str(result.stderr).split())  # rich wraps long lines


def test_a_second_process_on_the_same_job_is_refused_and_leaves_the_output_alone(
    cli: CliRunner, tmp_path: Path
) -> None:
    from quorum.store.journal import Journal

    source = write(tmp_path / "in.jsonl", {"id": "a", "prompt": "x"})
    partial = tmp_path / "out.jsonl.partial"
    partial.write_text("a line the running job wrote\n")
    running = Journal(tmp_path / "out.jsonl.journal")  # another process holds the job
    try:
        done = cli.invoke(app, ["batch", str(source), "-o", str(tmp_path / "out.jsonl"), "-m", MODEL])
    finally:
        running.close()
    assert done.exit_code == 2
    assert "another quorum process" in done.stderr
    assert partial.read_text() == "a line the running job wrote\n"
