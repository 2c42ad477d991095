"""``quorum``: the command-line entry point. Each command lives in its own module."""

from __future__ import annotations

import typer

from quorum.cli import analyze, batch, cache, emulate, evaluate, moderate, review, translate

app = typer.Typer(
    name="quorum",
    help="Run many LLM calls at once, safely and cheaply.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.command("review")(review.command)
app.command("moderate")(moderate.command)
app.command("analyze")(analyze.command)
app.command("translate")(translate.command)
app.command("emulate")(emulate.command)
app.add_typer(evaluate.app, name="eval")
app.command("batch")(batch.command)  # durable jobs
app.add_typer(cache.app, name="cache")  # durable jobs


def main() -> None:
    app()


if __name__ == "__main__":
    main()
