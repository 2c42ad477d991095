"""``quorum emulate``: serve a local Anthropic/OpenAI-compatible API for development."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from quorum.errors import ConfigError

if TYPE_CHECKING:
    from quorum.testing.emulator import Emulator

_SHARE = "Share of requests (0 to 1) that"
MAX_PORT = 65535


def command(
    port: Annotated[int, typer.Option(help="Port on 127.0.0.1 (1 to 65535); 0 picks a free one.")] = 8787,
    script: Annotated[
        Path | None,
        typer.Option(help="Rules file (the fake provider's format) that scripts the answers."),
    ] = None,
    latency: Annotated[
        str,
        typer.Option(
            help="Seconds per answer, or uniform:LOW,HIGH, normal:MEAN,SD, lognormal:MEDIAN,SIGMA, exp:MEAN."
        ),
    ] = "0",
    error_429: Annotated[float, typer.Option(help=f"{_SHARE} get 429 with retry-after.")] = 0.0,
    error_500: Annotated[float, typer.Option(help=f"{_SHARE} get 500.")] = 0.0,
    error_529: Annotated[float, typer.Option(help=f"{_SHARE} get 529 (overloaded).")] = 0.0,
    error_reset: Annotated[float, typer.Option(help=f"{_SHARE} get a connection reset.")] = 0.0,
    error_hang: Annotated[float, typer.Option(help=f"{_SHARE} never get an answer.")] = 0.0,
    error_malformed: Annotated[float, typer.Option(help=f"{_SHARE} get a broken JSON body.")] = 0.0,
    rpm: Annotated[int | None, typer.Option(help="Enforced requests per minute.")] = None,
    itpm: Annotated[
        int | None,
        typer.Option("--itpm", "--tpm", help="Enforced input tokens per minute (--tpm is the same)."),
    ] = None,
    burst: Annotated[
        float,
        typer.Option(
            help="Seconds of refill each rate-limit bucket holds (60 = a full "
            "minute's allowance may be spent at once; 1 = even pacing)."
        ),
    ] = 60.0,
    seed: Annotated[int, typer.Option(help="Seed for injected errors and latency.")] = 0,
    batch_time: Annotated[float, typer.Option(help="Seconds from creating a batch until it ends.")] = 1.0,
    batch_errored: Annotated[
        float, typer.Option(help="Share of batch items (0 to 1) that end errored.")
    ] = 0.0,
    batch_expired: Annotated[float, typer.Option(help="Share of batch items (0 to 1) that expire.")] = 0.0,
    batch_max_requests: Annotated[
        int | None,
        typer.Option(help="Requests a batch may hold (default: 100,000 at Anthropic, 50,000 at OpenAI)."),
    ] = None,
    batch_max_bytes: Annotated[
        int | None,
        typer.Option(help="Bytes a batch may hold (default: 256 MB at Anthropic, 200 MB at OpenAI)."),
    ] = None,
) -> None:
    """Serve a local Anthropic- and OpenAI-compatible API until Ctrl-C.

    The official SDKs talk to it unmodified: export the printed
    variables, or give the base URLs to your client. Answers come
    from --script rules, else a short echo. The batch APIs
    (Anthropic Message Batches, OpenAI Files and Batch) are served
    too, with the --batch-* options.
    """
    errors = {
        "429": error_429,
        "500": error_500,
        "529": error_529,
        "reset": error_reset,
        "hang": error_hang,
        "malformed": error_malformed,
    }
    if not 0 <= port <= MAX_PORT:
        typer.echo(
            f"quorum emulate: --port {port} is not a TCP port: give 1 to {MAX_PORT}, or 0 for a free one",
            err=True,
        )
        raise typer.Exit(2)
    # Imported here: the HTTP server is loaded by this command only, not by every `quorum` run.
    from quorum.testing import emulator as emulator_module

    try:
        emulator = emulator_module.Emulator(
            script,
            latency=latency,
            errors=errors,
            rpm=rpm,
            itpm=itpm,
            burst=burst,
            port=port,
            seed=seed,
            batch_time=batch_time,
            batch_errored=batch_errored,
            batch_expired=batch_expired,
            batch_max_requests=batch_max_requests,
            batch_max_bytes=batch_max_bytes,
        )
    except ConfigError as exc:
        typer.echo(f"quorum emulate: {exc}", err=True)
        raise typer.Exit(2) from None
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve(emulator))
    typer.echo(f"stopped after {emulator.stats.total} requests", err=True)


async def _serve(emulator: Emulator) -> None:
    try:
        await emulator.start()
    except OSError as exc:
        typer.echo(f"quorum emulate: cannot listen: {exc} (try another --port, or 0)", err=True)
        raise typer.Exit(1) from None
    try:
        _announce(emulator)
        await _until_stopped()
    finally:
        await emulator.stop()


def _announce(emulator: Emulator) -> None:
    lines = [
        f"quorum emulator listening on {emulator.url}",
        f"  Anthropic base URL: {emulator.anthropic_base_url}",
        f"  OpenAI base URL:    {emulator.openai_base_url}",
        "Point the SDKs (and quorum) at it with:",
        *(f"  export {name}={value}" for name, value in emulator.env().items()),
        "Ctrl-C stops it.",
    ]
    print("\n".join(lines), flush=True)  # flushed: a parent process may be reading the port


async def _until_stopped() -> None:
    """Wait for Ctrl-C or SIGTERM (a parent stopping us).

    Both only set an event, so the stop runs as ordinary code rather than from a
    cancellation; where signal handlers cannot be set (Windows), Ctrl-C cancels the task.
    """
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    if sys.platform != "win32":
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
    await stop.wait()


if __name__ == "__main__":  # `python -m quorum.cli.emulate`, e.g. from a benchmark
    typer.run(command)
