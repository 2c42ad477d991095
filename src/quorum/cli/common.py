"""What every command shares: the common options, the model connection, the sync edge,
the exit codes.

Every command takes ``--model``, ``--fake-rules``, ``--concurrency``, ``--rpm``,
``--tpm``, ``--budget``, ``--timeout``, ``--json`` and ``--verbose``. ``execute`` is the
only place an event loop starts: it runs the command's coroutine, turns a user mistake
into one line on stderr and ``Exit.USAGE``, a failed run into one line and
``Exit.INCOMPLETE``, a closed stdout into a quiet end, and Ctrl-C into
``Exit.INTERRUPTED``: never a traceback.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import inspect
import logging
import os
import sys
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from enum import IntEnum
from pathlib import Path
from typing import Annotated, Any, NoReturn, TextIO, TypeVar, get_type_hints

import typer
from rich.console import Console
from rich.markup import escape

from quorum import errors
from quorum.engine import settings as run_settings
from quorum.engine.budget import Budget
from quorum.engine.connection import Connection, connect
from quorum.engine.events import EventSink
from quorum.llm.registry import default_model, parse_model
from quorum.llm.secrets import redact

T = TypeVar("T")

stderr = Console(stderr=True, highlight=False, soft_wrap=True)


class Exit(IntEnum):
    """Every command's exit status (the README lists them)."""

    OK = 0  # the work was done
    INCOMPLETE = 1  # some work failed or was skipped: the closing line says how much
    USAGE = 2  # a usage error, or nothing was done
    FAIL_ON = 3  # the --fail-on threshold was met
    INTERRUPTED = 130  # Ctrl-C


DEFAULT_TIMEOUT_S = 300.0
FAKE_RULES_ENV = "QUORUM_FAKE_RULES"
# -h as well as --help, for every command and group.
CONTEXT = {"help_option_names": ["-h", "--help"]}

ModelOpt = Annotated[
    str | None,
    typer.Option(
        "--model",
        "-m",
        help="provider/model, e.g. anthropic/claude-sonnet-5-5, openai/gpt-4o-mini, "
        "local, local:/path/model.gguf or fake. Default: $QUORUM_MODEL, else Anthropic if "
        "ANTHROPIC_API_KEY is set, else the embedded local model.",
        show_default=False,
    ),
]
FakeRulesOpt = Annotated[
    Path | None,
    typer.Option(
        "--fake-rules",
        help="With --model fake: a JSON file of rules the fake model answers from "
        f'([{{"match": "regex", "reply": "..."}}], as for quorum emulate --script). '
        f"Default: ${FAKE_RULES_ENV}.",
        show_default=False,
    ),
]
ConcurrencyOpt = Annotated[int, typer.Option("--concurrency", "-c", min=1, help="Calls in flight at once.")]
RpmOpt = Annotated[
    float | None,
    typer.Option("--rpm", min=1, help="Requests per minute allowed.", show_default="no limit"),
]
TpmOpt = Annotated[
    float | None,
    typer.Option(
        "--tpm",
        min=1,
        help="Tokens per minute allowed (input tokens for Anthropic, all tokens for others).",
        show_default="no limit",
    ),
]
BudgetOpt = Annotated[
    float | None,
    typer.Option(
        "--budget", min=0, help="Stop dispatching once this many dollars are spent.", show_default="no limit"
    ),
]
TimeoutOpt = Annotated[
    float | None,
    typer.Option(
        "--timeout",
        min=0.001,
        help="Seconds allowed for each call attempt; a retried call gets the same allowance again, "
        "so a refused connection is reported as refused, not as a timeout.",
        show_default=f"{DEFAULT_TIMEOUT_S:g}",
    ),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Write JSON instead of text.")]
NoCacheOpt = Annotated[
    bool, typer.Option("--no-cache", help="Neither read nor fill the response cache (see quorum cache).")
]
VerboseOpt = Annotated[
    bool, typer.Option("--verbose", "-v", help="Log every request and reply (keys redacted) to stderr.")
]
OutputOpt = Annotated[
    Path | None,
    typer.Option(
        "--output",
        "-o",
        help="Write the result to this file instead of stdout (checked before any call).",
        show_default=False,
    ),
]


@dataclass(frozen=True)
class Settings:
    """The common options, parsed."""

    model: str | None = None
    fake_rules: Path | None = None
    concurrency: int = 8
    rpm: float | None = None
    tpm: float | None = None
    budget: float | None = None
    timeout: float | None = None
    json: bool = False
    verbose: bool = False
    cache: bool = True  # the response cache (quorum.store.cache); --no-cache turns it off

    @property
    def call_timeout(self) -> float:
        """``--timeout``: seconds per call attempt, given to the connection."""
        return self.timeout if self.timeout is not None else DEFAULT_TIMEOUT_S

    def connect(self, *, announce: bool = True) -> Connection:
        """The connection for this run; says on stderr which model runs and why (unless
        ``announce`` is false: a review by static voters alone asks no model)."""
        model, why = (self.model, "--model") if self.model else default_model()
        provider, _ = parse_model(model)
        if announce:
            stderr.print(f"[dim]model: {escape(model)} ({why})[/dim]")
        # Anthropic limits input tokens per minute; OpenAI-style servers limit all tokens.
        anthropic = provider == "anthropic"
        return connect(
            model,
            concurrency=self.concurrency,
            rpm=self.rpm,
            itpm=self.tpm if anthropic else None,
            tpm=None if anthropic else self.tpm,
            timeout=self.call_timeout,
            cache=self.cache,
            **self._fake_options(provider),
        )

    def _fake_options(self, provider: str) -> dict[str, Any]:
        rules = self.fake_rules or os.environ.get(FAKE_RULES_ENV) or None
        if self.fake_rules is not None and provider != "fake":
            raise errors.ConfigError(f"--fake-rules {self.fake_rules} is for --model fake, not {provider}")
        if provider != "fake" or rules is None:
            return {}
        if not Path(rules).is_file():
            raise errors.ConfigError(f"fake rules {rules}: no such file (give a JSON list of rules)")
        return {"rules": Path(rules)}

    def make_budget(self) -> Budget | None:
        return Budget(dollars=self.budget) if self.budget is not None else None

    @contextmanager
    def in_force(self, on_event: EventSink | None = None) -> Iterator[run_settings.Settings]:
        """The run settings for the command, opened once around its work: every run inside
        (however deep) reads its concurrency, budget and event sink from them."""
        with run_settings.use(
            concurrency=self.concurrency, budget=self.make_budget(), on_event=on_event
        ) as s:
            yield s


# The options every command shares: (parameter, annotation, default).
COMMON_OPTIONS: tuple[tuple[str, Any, Any], ...] = (
    ("model", ModelOpt, None),
    ("fake_rules", FakeRulesOpt, None),
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
        raise typer.Exit(Exit.INTERRUPTED) from None
    except BrokenPipeError:
        stdout_closed()
    except errors.ConfigError as exc:
        fail(str(exc), code=Exit.USAGE)
    except errors.RunFailed as exc:
        # A source of items that stopped on a user mistake (a changed journal, a bad
        # input file) is a usage error, whatever the outcomes before it.
        if isinstance(exc.__cause__, errors.ConfigError):
            fail(str(exc.__cause__), code=Exit.USAGE)
        fail(errors.describe(exc), code=Exit.INCOMPLETE)
    except errors.QuorumError as exc:
        fail(errors.describe(exc), code=Exit.INCOMPLETE)
    except OSError as exc:
        fail(f"{exc.strerror or exc}: {exc.filename}" if exc.filename else str(exc), code=Exit.USAGE)


async def _run(work: Callable[[], Awaitable[T]]) -> T:
    return await work()


def fail(message: str, *, code: int = Exit.USAGE) -> NoReturn:
    """One line on stderr, then exit with ``code``. The message is shown as written:
    brackets in a file name are text, not markup."""
    stderr.print(f"[red]error:[/red] {escape(redact(message))}")
    raise typer.Exit(code)


def warn(message: str) -> None:
    """One warning line on stderr, the message shown as written."""
    stderr.print(f"[yellow]warning:[/yellow] {escape(redact(message))}")


def stdout_closed() -> NoReturn:
    """The reader of stdout went away (``| head -1``): end quietly."""
    silence_stdout()
    raise typer.Exit(Exit.INCOMPLETE)


def silence_stdout() -> None:
    """Point stdout at /dev/null, so that Python's own flush at exit does not complain
    about the closed pipe either."""
    with contextlib.suppress(OSError, ValueError, AttributeError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())


def examples(*lines: str) -> str:
    """A command's examples for the end of its ``--help``, one per line as written."""
    return "\b\nExamples:\n" + "\n".join(f"  {line}" for line in lines)


def exit_code(done: int, not_done: int) -> Exit:
    """The status for a run of ``done`` items that were done and ``not_done`` that failed
    or were skipped: every one done, some, or none."""
    if not not_done:
        return Exit.OK
    return Exit.INCOMPLETE if done else Exit.USAGE


def plural(count: int, noun: str, many: str | None = None) -> str:
    """``1 text``, ``2 texts``, ``0 texts``."""
    return f"{count} {noun if count == 1 else (many or noun + 's')}"


# -- where results go -----------------------------------------------------------------------


def check_output(path: Path | None, option: str = "--output") -> None:
    """Refuse an output path that cannot be written, before any call is paid for."""
    if path is None:
        return
    where = f"{option} {path}"
    if path.is_dir():
        fail(f"{where} is a directory: give a file name")
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        fail(f"{where}: the directory {parent} does not exist")
    target = path if path.exists() else parent
    if not os.access(target, os.W_OK):
        fail(f"{where}: not writable (check the permissions of {target})")


@contextmanager
def output(path: Path | None) -> Iterator[TextIO]:
    """Where the result goes: the ``--output`` file (checked already), else stdout."""
    if path is None:
        yield sys.stdout
        return
    with path.open("w", encoding="utf-8") as stream:
        yield stream


# -- logging -----------------------------------------------------------------------------------


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
