"""``quorum eval review DATA.jsonl``: how well the reviewer finds real vulnerabilities.

Reviews labelled functions (before and after real security fixes) and prints, for each
confirmation threshold, the found rate on vulnerable functions, the false-alarm rate on
fixed ones, pair accuracy and line precision (scoring rule: ``quorum.apps.review.evaluate``).
A function whose review failed is left out of the scores, never scored as "found
nothing": each gets a line saying why, the closing line counts them, and the exit status
is 1 (2 when no function could be reviewed, or the data is not valid).

With ``--journal PATH`` each review is recorded as it lands; running the same command
again (after a kill, or after some reviews failed) reviews only the functions not yet
done. A data line changed under an id the journal holds, or other reviewers, is an
error naming the function (exit 2), unless ``--restart``.

With ``--batch-api`` every reviewer's call about every function goes out first as
provider batches (half the price, answers within 24 hours; ``quorum.cli.batch_api``),
journaled in ``--journal`` beside the reviews, and the functions are reviewed and scored
from the answers once the batches end.

With ``--ray`` the reviewers' calls are made by Ray workers (``--workers N``,
``--ray-address``; ``quorum.cli.ray_options``); the reviews, the journal and the scores
stay in this process.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from quorum.apps.review.evaluate import (
    Case,
    Evaluation,
    evaluate,
    journaled_cases,
    load_cases,
    load_families,
    plan_reviews,
)
from quorum.apps.review.reviewers import static_only
from quorum.apps.review.system import CodeReviewSystem
from quorum.cli._feed import Feed
from quorum.cli.batch_api import (
    BatchApiOpt,
    BatchMode,
    DeadlineOpt,
    FallbackOnlineOpt,
    PollOpt,
    batch_calls,
    batch_facts,
    batch_mode,
    closing_line,
    resume_command,
)
from quorum.cli.common import (
    CONTEXT,
    Exit,
    OutputOpt,
    Settings,
    check_output,
    examples,
    execute,
    exit_code,
    fail,
    output,
    plural,
    stderr,
    warn,
    with_settings,
)
from quorum.cli.ray_options import RayAddressOpt, RayOpt, WorkersOpt, calls_on, items_in_flight, ray_executor
from quorum.engine.batches import BatchReport, Record
from quorum.engine.connection import Connection

app = typer.Typer(
    help="Measure quorum's applications on labelled data.",
    no_args_is_help=True,
    context_settings=CONTEXT,
    rich_markup_mode=None,
)

EXAMPLES = examples(
    "quorum eval review sven.jsonl --sample 20 --seed 1 --thresholds 1,2,3",
    "quorum eval review sven.jsonl --limit 5 --reviewers 3 --json -o scores.json",
    "quorum eval review sven.jsonl --journal sven.journal   # run again to resume",
    "quorum eval review sven.jsonl --batch-api --journal sven.journal",
)


@app.command("review", epilog=EXAMPLES, context_settings=CONTEXT)
@with_settings
def review(
    data: Annotated[
        Path,
        typer.Argument(
            help="JSONL of labelled functions (id, pair, side, code, vulnerable_lines).", show_default=False
        ),
    ],
    limit: Annotated[
        int | None, typer.Option("--limit", min=1, help="Only the first N pairs.", show_default="all")
    ] = None,
    sample: Annotated[
        int | None,
        typer.Option("--sample", min=1, help="N pairs drawn at random (see --seed).", show_default=False),
    ] = None,
    seed: Annotated[int, typer.Option("--seed", help="Seed for --sample.")] = 0,
    reviewers: Annotated[
        str | None,
        typer.Option("--reviewers", "-r", help="As for quorum review.", show_default="as for quorum review"),
    ] = None,
    thresholds: Annotated[
        str, typer.Option("--thresholds", help="Confirmation thresholds to score.")
    ] = "1,2,3",
    out: OutputOpt = None,
    journal: Annotated[
        Path | None,
        typer.Option(
            "--journal",
            help="Record each review here; run again to review only the functions not yet done.",
            show_default=False,
        ),
    ] = None,
    restart: Annotated[
        bool, typer.Option("--restart", help="Forget the --journal and review every function.")
    ] = False,
    batch_api: BatchApiOpt = False,
    fallback_online: FallbackOnlineOpt = False,
    deadline: DeadlineOpt = None,
    poll: PollOpt = 60.0,
    ray: RayOpt = False,
    ray_address: RayAddressOpt = None,
    workers: WorkersOpt = None,
    *,
    settings: Settings,
) -> None:
    """Run the reviewer over labelled data and score it."""
    if limit is not None and sample is not None:
        fail("--limit and --sample both choose the pairs: pick one")
    if restart and journal is None:
        fail("--restart forgets a --journal: give --journal PATH too")
    batch = batch_mode(batch_api, fallback_online, deadline, poll, budget=settings.budget)
    extra: dict[str, object] = {}  # the batch figures, for --json
    levels = _thresholds(thresholds)
    check_output(out)
    executor = ray_executor(settings, ray, ray_address, workers, batch_api=batch_api)

    async def work() -> Evaluation:
        cases = load_cases(data, limit=limit, sample=sample, seed=seed)
        families = load_families(data)
        feed = Feed("eval", group=lambda event: event.run or "eval")
        spec = int(reviewers) if reviewers and reviewers.isdigit() else reviewers
        async with calls_on(executor, settings.connect(announce=not static_only(reviewers))) as llm:
            with feed, settings.in_force() as run:
                # --timeout is the connection's, per call attempt; the review's tasks get
                # none of their own, so a refused connection is reported as refused.
                system = CodeReviewSystem(
                    llm=llm,
                    reviewers=spec,
                    concurrency=run.concurrency,
                    on_event=feed.on_event,
                    budget=run.budget,
                )
                results = None
                if batch is not None:
                    report, results = await _batches(cases, system, llm, journal, restart, batch)
                    extra["batch"] = batch_facts(report)
                    if report.detached:
                        raise typer.Exit(Exit.INTERRUPTED)  # the same command resumes
                # One review per function at a time per worker; the connection caps the calls.
                # With --ray, functions enough that their reviewers' calls fill every worker.
                in_flight = run.concurrency
                if executor is not None:
                    in_flight = items_in_flight(executor, len(system.selection.llm))
                result = await evaluate(
                    cases,
                    system,
                    families,
                    thresholds=levels,
                    concurrency=in_flight,
                    journal=journal,
                    restart=restart,
                    answers=results,
                )
        feed.close(result.summary)
        return result

    result = execute(work, verbose=settings.verbose)
    with output(out) as stream:
        if settings.json:
            stream.write(json.dumps(result.as_dict() | extra, indent=2) + "\n")
        else:
            _print_table(result, Console(file=stream, highlight=False))
    _report_failures(result)
    raise typer.Exit(exit_code(result.reviewed, result.failed_reviews))


async def _batches(
    cases: list[Case],
    system: CodeReviewSystem,
    llm: Connection,
    journal: Path | None,
    restart: bool,
    batch: BatchMode,
) -> tuple[BatchReport, dict[str, Record]]:
    """Every call of the reviews not yet journaled, through the batch API."""
    done = await journaled_cases(cases, system, journal) if journal is not None and not restart else set()
    requests = await plan_reviews([case for case in cases if case.id not in done], system)
    report, results = await batch_calls(llm, requests, journal, restart=restart, **batch.options())
    stderr.print(f"eval: {closing_line(report, resume_command())}", markup=False, highlight=False)
    return report, results


def _thresholds(text: str) -> list[int]:
    try:
        levels = sorted({int(part) for part in text.split(",") if part.strip()})
    except ValueError:
        fail(f"--thresholds {text!r}: give whole numbers separated by commas, e.g. 1,2,3")
    if not levels or levels[0] < 1:
        fail("--thresholds: every threshold must be at least 1")
    return levels


def _report_failures(result: Evaluation) -> None:
    """A line for each function that could not be reviewed, then how many."""
    for case, why in result.failures.items():
        warn(f"function {case} was not reviewed and is left out of the scores: {why}")
    if result.failed_reviews:
        warn(
            f"{result.failed_reviews} of {plural(result.cases, 'function')} could not be reviewed; "
            f"the scores cover the other {result.reviewed}"
        )
    elif result.incomplete:
        warn(f"{plural(result.incomplete, 'review')} had a reviewer whose calls failed")
    else:
        resumed = f" ({result.from_journal} from the journal)" if result.from_journal else ""
        stderr.print(f"[dim]reviewed {escape(plural(result.cases, 'function'))}{resumed}[/dim]")


def _print_table(result: Evaluation, console: Console) -> None:
    facts = result.as_dict()
    summary = facts["summary"]
    table = Table(
        title=f"{escape(result.model or 'static voters only')}: "
        f"{plural(result.reviewed, 'function')} scored, "
        f"{plural(summary['calls'], 'call')}, {summary['wall_s']}s"
    )
    for name in ("confirm", "found rate", "false alarms", "pair accuracy", "line precision"):
        table.add_column(name, justify="right")
    for row in facts["thresholds"]:
        cells = [row["found_rate"], row["false_alarm_rate"], row["pair_accuracy"], row["line_precision"]]
        table.add_row(str(row["confirm"]), *(_pct(c) for c in cells))
    console.print(table)


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.0%}"
