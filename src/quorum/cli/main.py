"""``quorum``: the command-line entry point. Each command lives in its own module."""

from __future__ import annotations

import typer

from quorum.cli import emulate

app = typer.Typer(
    name="quorum",
    help="Run many LLM calls at once, safely and cheaply.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.command("emulate")(emulate.command)


def main() -> None:
    app()
