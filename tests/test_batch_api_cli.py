"""``--batch-api`` at the command line: progress lines, Ctrl-C detaches, twice cancels."""

from __future__ import annotations

import asyncio
import io
import json
import os
import signal
from pathlib import Path

from rich.console import Console

from quorum.cli.batch_api import closing_line, describe, run_with_batches
from quorum.engine.batches import BatchReport, BatchView
from quorum.llm.batches.base import BatchCounts, BatchItem
from quorum.llm.batches.fake import FakeBatches
from quorum.llm.types import Request

RESUME = "quorum batch in.jsonl -o out.jsonl --batch-api"


def console() -> tuple[Console, io.StringIO]:
    text = io.StringIO()
    return Console(file=text, width=300), text


def test_a_batch_line_shows_state_counts_and_time_since_submission() -> None:
    counts = BatchCounts(total=10, succeeded=6, errored=1, expired=1)
    line = describe(BatchView("job.1", "msgbatch_1", "ended", counts, 150.0))
    assert line == "batch msgbatch_1: ended (8/10 done, 1 errored, 1 expired), 2 min since submission"


def test_the_closing_line_says_how_to_resume_a_detached_job() -> None:
    report = BatchReport(items=5, detached=True, open_batches=["msgbatch_1"])
    assert f"run `{RESUME}` to resume" in closing_line(report, RESUME)
    assert "resume" not in closing_line(BatchReport(items=5, succeeded=5), RESUME)


async def interrupted(tmp_path: Path, times: int) -> tuple[BatchReport, FakeBatches, str]:
    api = FakeBatches(time_to_end=3600)
    items = [BatchItem(f"i{n}", Request.of(f"q {n}")) for n in range(3)]
    out, text = console()
    loop = asyncio.get_running_loop()
    for n in range(times):
        loop.call_later(0.1 * (n + 1), os.kill, os.getpid(), signal.SIGINT)
    journal = tmp_path / "j.db"
    report, _ = await run_with_batches(api, items, journal, resume=RESUME, console=out, cancel_window_s=1)
    return report, api, text.getvalue()


async def test_the_first_ctrl_c_detaches_and_says_how_to_resume(tmp_path: Path) -> None:
    report, api, said = await interrupted(tmp_path, 1)
    assert report.detached
    assert report.open_batches == ["fakebatch_1"]
    assert not api.batches["fakebatch_1"].cancelled
    assert "batch fakebatch_1: in_progress" in said
    assert f"to collect their results run: {RESUME}" in said


async def test_the_second_ctrl_c_also_cancels_the_remote_batch(tmp_path: Path) -> None:
    report, api, said = await interrupted(tmp_path, 2)
    assert api.batches["fakebatch_1"].cancelled
    assert "cancelling the remote batches" in said
    assert report.detached


# --- quorum batch --batch-api -------------------------------------------------------------------


def run_cli(*args: str, cache: Path) -> tuple[int, str, str]:
    from typer.testing import CliRunner

    from quorum.cli.main import app

    result = CliRunner().invoke(app, ["batch", *args], env={"QUORUM_CACHE_DIR": str(cache)})
    return result.exit_code, result.stdout, result.stderr


def test_quorum_batch_with_the_batch_api_writes_each_line_once_in_input_order(tmp_path: Path) -> None:
    source = tmp_path / "in.jsonl"
    lines = [{"id": f"k{n}", "prompt": f"question {n}"} for n in range(5)]
    source.write_text("".join(json.dumps(x) + "\n" for x in lines) + "not json\n")
    out = tmp_path / "out.jsonl"
    code, _, said = run_cli(str(source), "-o", str(out), "-m", "fake", "--batch-api", cache=tmp_path / "c")
    records = [json.loads(x) for x in out.read_text().splitlines()]
    assert [r["custom_id"] for r in records[:5]] == [f"k{n}" for n in range(5)]
    assert [r["status"] for r in records] == ["ok"] * 5 + ["error"]
    assert records[2]["text"] == "echo: question 2"
    assert code == 1  # a line could not be read
    assert "batch fakebatch_1: ended (5/5 done)" in said
    again, summary, said = run_cli(
        str(source), "-o", str(out), "-m", "fake", "--batch-api", "--json", cache=tmp_path / "c"
    )
    assert again == 1
    assert json.loads(summary)["batches_created"] == 0
    assert [json.loads(x) for x in out.read_text().splitlines()] == [
        {**r, "cached": True, "cost": 0.0} if r["status"] == "ok" else r for r in records
    ]  # the second run is answered from the cache the batch filled: no batch, $0
    assert "0 batch(es) created" in said


def test_quorum_batch_refuses_batch_options_without_batch_api(tmp_path: Path) -> None:
    source = tmp_path / "in.jsonl"
    source.write_text('{"id": 1, "prompt": "x"}\n')
    code, _, said = run_cli(
        str(source), "-o", str(tmp_path / "o"), "-m", "fake", "--fallback-online", cache=tmp_path / "c"
    )
    assert code == 2
    assert "--batch-api" in said


def test_a_model_without_a_batch_api_is_a_one_line_error(tmp_path: Path) -> None:
    source = tmp_path / "in.jsonl"
    source.write_text('{"id": 1, "prompt": "x"}\n')
    code, _, said = run_cli(
        str(source), "-o", str(tmp_path / "o"), "-m", "local", "--batch-api", cache=tmp_path / "c"
    )
    assert code == 2
    assert "has no batch API" in said
