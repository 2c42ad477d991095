"""What every command shares: the common options, the model connection, the sync edge.

Every command takes ``--model``, ``--concurrency``, ``--rpm``, ``--tpm``, ``--budget``,
``--timeout``, ``--json`` and ``--verbose``. ``execute`` is the only place an event loop
starts: it runs the command's coroutine, turns a user mistake into one line on stderr and
exit code 2, a failed run into one line and exit code 1, and Ctrl-C into exit code 130 —
never a traceback.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import logging
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated, Any, NoReturn, TypeVar, get_type_hints

import typer
from rich.console import Console

from quorum import errors
from quorum.engine.budget import Budget
from quorum.engine.connection import Connection, connect
from quorum.llm.registry import default_model, parse_model
from quorum.llm.secrets import redact

T = TypeVar("T")

stderr = Console(stderr=True, highlight=False, soft_wrap=True)

ModelOpt = Annotated[
    str | None,
    typer.Option(
        "--model",
        "-m",
        help="provider/model, e.g. anthropic/claude-sonnet-5-5, openai/gpt-4o-mini, "
        "local or local:/path/model.gguf. Default: $QUORUM_MODEL, else Anthropic if "
        "ANTHROPIC_API_KEY is set, else the embedded local model.",
    ),
]
ConcurrencyOpt = Annotated[int, typer.Option("--concurrency", "-c", min=1, help="Calls in flight at once.")]
RpmOpt = Annotated[float | None, typer.Option("--rpm", min=1, help="Requests per minute allowed.")]
TpmOpt = Annotated[float | None, typer.Option("--tpm", min=1, help="Input tokens per minute allowed.")]
BudgetOpt = Annotated[
    float | None, typer.Option("--budget", min=0, help="Stop dispatching once this many dollars are spent.")
]
TimeoutOpt = Annotated[float | None, typer.Option("--timeout", min=0.001, help="Seconds allowed per call.")]
NoCacheOpt = Annotated[
    bool, typer.Option("--no-cache", help="Neither read nor fill the response cache (see quorum cache).")
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Write JSON to stdout instead of text.")]
VerboseOpt = Annotated[
    bool, typer.Option("--verbose", "-v", help="Log every request and reply (keys redacted) to stderr.")
]


@dataclass(frozen=True)
class Settings:
    """The common options, parsed."""

    model: str | None = None
    concurrency: int = 8
    rpm: float | None = None
    tpm: float | None = None
    budget: float | None = None
    timeout: float | None = None
    json: bool = False
    verbose: bool = False
    cache: bool = True  # the response cache (quorum.store.cache); --no-cache turns it off

    def connect(self) -> Connection:
        """The connection for this run; says on stderr which model runs and why."""
        model, why = (self.model, "--model") if self.model else default_model()
        provider, _ = parse_model(model)
        stderr.print(f"[dim]model: {model} ({why})[/dim]")
        # Anthropic limits input tokens per minute; OpenAI-style servers limit all tokens.
        anthropic = provider == "anthropic"
        return connect(
            model,
            concurrency=self.concurrency,
            rpm=self.rpm,
            itpm=self.tpm if anthropic else None,
            tpm=None if anthropic else self.tpm,
            timeout=self.timeout if self.timeout is not None else 300.0,
            cache=self.cache,
        )

    def make_budget(self) -> Budget | None:
        return Budget(dollars=self.budget) if self.budget is not None else None


# The options every command shares: (parameter, annotation, default).
COMMON_OPTIONS: tuple[tuple[str, Any, Any], ...] = (
    ("model", ModelOpt, None),
    ("concurrency", ConcurrencyOpt, 8),
    ("rpm", RpmOpt, None),
    ("tpm", TpmOpt, None),
    ("budget", BudgetOpt, None),
    ("timeout", TimeoutOpt, None),
    ("no_cache", NoCacheOpt, False),
    ("json_output", JsonOpt, False),
    ("verbose", VerboseOpt, False),
)


def with_settings(command: Callable[..., T]) -> Callable[..., T]:
    """Give a command the options every command shares, declared once.

    The command declares its own parameters and a keyword-only ``settings: Settings``;
    typer sees the command's own options followed by the common ones, and the command
    receives the common ones gathered in ``settings``."""
    # typer reads each option from its parameter's annotation, so the annotations must be
    # the resolved objects, not the strings of ``from __future__ import annotations``.
    hints = {k: v for k, v in get_type_hints(command, include_extras=True).items() if k != "settings"}
    own = [
        p.replace(annotation=hints[p.name])
        for p in inspect.signature(command).parameters.values()
        if p.name != "settings"
    ]
    shared = [
        inspect.Parameter(n, inspect.Parameter.KEYWORD_ONLY, default=d, annotation=a)
        for n, a, d in COMMON_OPTIONS
    ]

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> T:
        common = {name: kwargs.pop(name) for name, _a, _d in COMMON_OPTIONS}
        common["json"] = common.pop("json_output")
        common["cache"] = not common.pop("no_cache")
        return command(*args, settings=Settings(**common), **kwargs)

    wrapper.__annotations__ = hints | {n: a for n, a, _d in COMMON_OPTIONS}
    wrapper.__signature__ = inspect.Signature(own + shared)  # type: ignore[attr-defined]
    return wrapper


def execute(work: Callable[[], Awaitable[T]], *, verbose: bool = False) -> T:
    """Run a command's coroutine at the sync edge, with errors that teach."""
    configure_logging(verbose)
    try:
        return asyncio.run(_run(work))
    except KeyboardInterrupt:
        stderr.print("interrupted: calls in flight were cancelled")
        raise typer.Exit(130) from None
    except errors.ConfigError as exc:
        fail(str(exc), code=2)
    except errors.QuorumError as exc:
        fail(errors.describe(exc), code=1)
    except OSError as exc:
        fail(f"{exc.strerror or exc}: {exc.filename}" if exc.filename else str(exc), code=2)


async def _run(work: Callable[[], Awaitable[T]]) -> T:
    return await work()


def fail(message: str, *, code: int = 2) -> NoReturn:
    """One line on stderr, then exit with ``code``."""
    stderr.print(f"[red]error:[/red] {redact(message)}", markup=True)
    raise typer.Exit(code)


class _Redacting(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = redact(record.getMessage())
        record.args = None
        return True


def configure_logging(verbose: bool) -> None:
    """``--verbose``: quorum's own loggers at debug level on stderr, keys redacted. The
    SDKs' loggers stay quiet: they print headers."""
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(_Redacting())
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
    logger = logging.getLogger("quorum")
    logger.handlers = [handler]
    logger.setLevel(logging.DEBUG if verbose else logging.WARNING)
    logger.propagate = False
