"""``--ray``, ``--ray-address`` and ``--workers``: a command's calls made by Ray workers.

``quorum batch``, ``quorum moderate`` and ``quorum eval review`` declare the same three
options (``RayOpt``, ``RayAddressOpt``, ``WorkersOpt``) and build their executor with
``ray_executor``: a missing extra or an address nobody answers at is one line and exit
status 2 before any work. A workflow command then makes its calls through
``calls_on(executor, llm)``: a ``RemoteConnection`` (``quorum.engine.cluster.remote``), so
the journal, the cache and the output stay in this process while the calls travel.
Workers that cannot start make every call fail the same way, so the first
``ClusterUnavailable`` stops the command and is said once.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Annotated

import typer

from quorum import errors
from quorum.cli.common import Settings, fail
from quorum.engine.connection import Connection
from quorum.llm.types import Reply, Request

if TYPE_CHECKING:
    from quorum.engine.cluster import RayExecutor

RayOpt = Annotated[bool, typer.Option("--ray", help="Make the calls on Ray workers (needs quorum[ray]).")]
RayAddressOpt = Annotated[
    str | None,
    typer.Option("--ray-address", help="With --ray: the cluster (host:port); none starts a local one."),
]
WorkersOpt = Annotated[
    int | None, typer.Option("--workers", min=1, help="With --ray: worker processes (default 2).")
]

NO_RAY_BATCHES = "--ray runs the calls online on a cluster; it does not go with --batch-api"


def ray_executor(
    settings: Settings, ray: bool, address: str | None, workers: int | None, *, batch_api: bool = False
) -> RayExecutor | None:
    """The ``RayExecutor`` for ``--ray`` (``None`` without); ``--concurrency`` calls per
    worker. A missing extra or an address nobody answers at is a one-line error here."""
    if batch_api and (ray or address is not None or workers is not None):
        fail(NO_RAY_BATCHES)
    if not ray:
        if address is not None or workers is not None:
            fail("--ray-address and --workers go with --ray")
        return None
    from quorum.engine import cluster  # Ray only when asked for

    try:
        executor = cluster.RayExecutor(address, workers=workers or 2, concurrency=settings.concurrency)
        executor.check_address()
    except errors.ConfigError as exc:
        fail(str(exc))
    return executor


def items_in_flight(executor: RayExecutor, calls_per_item: int) -> int:
    """Items a journaled run keeps going so that their calls fill every worker."""
    from quorum.engine.cluster.remote import in_flight_for

    return max(1, in_flight_for(executor) // max(1, calls_per_item))


def cluster_down(exc: BaseException) -> bool:
    """Whether ``exc`` says no call can be made on the cluster at all."""
    from quorum.engine.cluster.remote import ClusterUnavailable

    return isinstance(exc, ClusterUnavailable)


@contextlib.asynccontextmanager
async def calls_on(executor: RayExecutor | None, llm: Connection) -> AsyncIterator[Connection]:
    """``llm`` itself without an executor, else its calls made by the executor's workers;
    closed on the way out (the remote connection first, then the executor). The first
    ``ClusterUnavailable`` cancels the work inside and is raised in its place, once."""
    if executor is None:
        async with llm:
            yield llm
        return
    from quorum.engine.cluster.remote import RemoteConnection

    main = asyncio.current_task()
    down: list[errors.ConfigError] = []

    class Watched(RemoteConnection):
        async def complete(self, request: Request) -> Reply:
            try:
                return await super().complete(request)
            except errors.ConfigError as exc:
                if cluster_down(exc) and not down and main is not None:
                    down.append(exc)
                    main.cancel()  # every other call would fail the same way
                raise

    try:
        remote = Watched(executor, llm)
    except BaseException:  # a connection the workers cannot be told how to build
        await llm.aclose()
        executor.shutdown()
        raise
    try:
        yield remote
    except asyncio.CancelledError:
        if not down or main is None:
            raise
        main.uncancel()
        raise down[0] from None
    finally:
        try:
            await remote.aclose()  # closes llm too
        finally:
            executor.shutdown()
