"""``quorum``: the command-line entry point. Each command lives in its own module."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

import typer

import quorum
from quorum.cli import analyze, emulate, evaluate, moderate, review, translate
from quorum.cli.common import CONTEXT, Exit, examples, silence_stdout

EPILOG = (
    "Exit status: 0 the work was done; 1 some of it failed or was skipped (the closing line says "
    "how much); 2 a usage error, or nothing was done; 3 the --fail-on threshold was met; "
    "130 interrupted."
)

app = typer.Typer(
    name="quorum",
    help="Run many LLM calls at once, safely and cheaply.",
    epilog=EPILOG,
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings=CONTEXT,
    # Help text is shown as written: "[[section]]" in an option's help is TOML, not markup.
    rich_markup_mode=None,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"quorum {quorum.__version__}")
        raise typer.Exit(Exit.OK)


@app.callback()
def root(
    version: Annotated[
        bool,
        typer.Option("--version", help="Show quorum's version and exit.", callback=_version, is_eager=True),
    ] = False,
) -> None:
    """Run many LLM calls at once, safely and cheaply."""


def _command(name: str, function: Callable[..., Any], example: str) -> None:
    app.command(name, epilog=example, context_settings=CONTEXT)(function)


_command(
    "review",
    review.command,
    examples("quorum review src/ --fail-on high", "quorum review app.py --json > review.json"),
)
_command("moderate", moderate.command, moderate.EXAMPLES)
_command("analyze", analyze.command, analyze.EXAMPLES)
_command("translate", translate.command, translate.EXAMPLES)
_command("emulate", emulate.command, examples("quorum emulate --port 8080"))
app.add_typer(evaluate.app, name="eval")


def main() -> None:
    try:
        app()
    except BrokenPipeError:  # the reader of stdout went away (| head -1): end quietly
        silence_stdout()
        raise SystemExit(Exit.INCOMPLETE) from None


if __name__ == "__main__":
    main()
