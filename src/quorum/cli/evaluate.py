"""``quorum eval review DATA.jsonl``: how well the reviewer finds real vulnerabilities.

Reviews labelled functions (before and after real security fixes) and prints, for each
confirmation threshold, the found rate on vulnerable functions, the false-alarm rate on
fixed ones, pair accuracy and line precision (scoring rule: ``quorum.apps.review.evaluate``).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from quorum.apps.review.evaluate import Evaluation, evaluate, load_cases, load_families
from quorum.apps.review.system import CodeReviewSystem
from quorum.cli._feed import Feed
from quorum.cli.common import (
    Settings,
    execute,
    fail,
    with_settings,
)

app = typer.Typer(help="Measure quorum's applications on labelled data.", no_args_is_help=True)


@app.command("review")
@with_settings
def review(
    data: Annotated[
        Path, typer.Argument(help="JSONL of labelled functions (id, pair, side, code, vulnerable_lines).")
    ],
    limit: Annotated[int | None, typer.Option("--limit", min=1, help="Only the first N pairs.")] = None,
    sample: Annotated[
        int | None, typer.Option("--sample", min=1, help="N pairs drawn at random (see --seed).")
    ] = None,
    seed: Annotated[int, typer.Option("--seed", help="Seed for --sample.")] = 0,
    reviewers: Annotated[str | None, typer.Option("--reviewers", "-r", help="As for quorum review.")] = None,
    thresholds: Annotated[
        str, typer.Option("--thresholds", help="Confirmation thresholds to score.")
    ] = "1,2,3",
    *,
    settings: Settings,
) -> None:
    """Run the reviewer over labelled data and score it."""
    if limit is not None and sample is not None:
        fail("--limit and --sample both choose the pairs: pick one")
    levels = _thresholds(thresholds)

    async def work() -> Evaluation:
        cases = load_cases(data, limit=limit, sample=sample, seed=seed)
        feed = Feed("eval", group=lambda event: event.run or "eval")
        spec = int(reviewers) if reviewers and reviewers.isdigit() else reviewers
        system = CodeReviewSystem(
            llm=settings.connect(),
            reviewers=spec,
            concurrency=settings.concurrency,
            on_event=feed.on_event,
            budget=settings.make_budget(),
            timeout=settings.timeout,
        )
        with feed:
            # One review per function at a time per worker; the connection caps the calls.
            result = await evaluate(
                cases, system, load_families(data), thresholds=levels, concurrency=settings.concurrency
            )
        feed.close(result.summary)
        return result

    result = execute(work, verbose=settings.verbose)
    if settings.json:
        sys.stdout.write(json.dumps(result.as_dict(), indent=2) + "\n")
    else:
        _print_table(result)


def _thresholds(text: str) -> list[int]:
    try:
        levels = sorted({int(part) for part in text.split(",") if part.strip()})
    except ValueError:
        fail(f"--thresholds {text!r}: give whole numbers separated by commas, e.g. 1,2,3")
    if not levels or levels[0] < 1:
        fail("--thresholds: every threshold must be at least 1")
    return levels


def _print_table(result: Evaluation) -> None:
    facts = result.as_dict()
    table = Table(
        title=f"{result.model}: {result.cases} functions, {facts['calls']} calls, {facts['wall_s']}s"
    )
    for name in ("confirm", "found rate", "false alarms", "pair accuracy", "line precision"):
        table.add_column(name, justify="right")
    for row in facts["thresholds"]:
        cells = [row["found_rate"], row["false_alarm_rate"], row["pair_accuracy"], row["line_precision"]]
        table.add_row(str(row["confirm"]), *(_pct(c) for c in cells))
    Console().print(table)
    if result.failed_reviews:
        Console(stderr=True).print(
            f"[yellow]{result.failed_reviews} functions could not be reviewed[/yellow]"
        )


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.0%}"
