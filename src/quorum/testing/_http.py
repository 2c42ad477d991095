"""The emulator's HTTP server: aiohttp's low-level server, plus what an emulator must count.

aiohttp parses and writes HTTP/1.1 (keep-alive, pipelining, chunked bodies both ways).
This module adds what an emulator needs on top: the connection and in-flight counters,
a deliberate connection reset, and the client-went-away signal. With
``handler_cancellation=True`` aiohttp cancels a handler whose client closed the
connection, so a hanging or slow answer never outlives the caller that gave up on it,
and the request counts as *aborted*. Stopping is prompt: the listening socket closes,
every connection (idle keep-alive ones too) is dropped at once and the handlers still
running are cancelled.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import struct
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

from aiohttp import web

from quorum.testing._stats import EmulatorStats

log = logging.getLogger(__name__)

# Above the largest batch a provider accepts (Anthropic: 256 MB), so the emulator's own
# size check answers in the API's words rather than aiohttp's.
MAX_BODY = 320 * 1024 * 1024
# Fan-outs open hundreds of connections at once; the default backlog of 100 drops some.
BACKLOG = 2048
_REASONS = {529: "Overloaded"}

Headers = Sequence[tuple[str, str]]


class Exchange:
    """One request and its answer: a whole response, a chunked stream, or a reset."""

    __slots__ = ("closing", "request", "response", "status")

    def __init__(self, request: web.BaseRequest) -> None:
        self.request = request
        self.response: web.StreamResponse | None = None
        self.status: int | None = None
        self.closing = False  # we drop the connection on purpose: not the client's doing

    @property
    def method(self) -> str:
        return self.request.method

    @property
    def path(self) -> str:
        return self.request.path

    @property
    def headers(self) -> Mapping[str, str]:
        """Case-insensitive, as HTTP header names are."""
        return self.request.headers

    @property
    def query(self) -> Mapping[str, str]:
        return self.request.query

    @property
    def base_url(self) -> str:
        """``http://host:port`` as the client addressed it, for URLs in answers."""
        return f"{self.request.scheme}://{self.request.host}"

    async def body(self) -> bytes:
        return await self.request.read()

    async def form(self) -> Mapping[str, Any]:
        """A ``multipart/form-data`` body: text fields as ``str``, files as ``web.FileField``."""
        return await self.request.post()

    def respond(self, status: int, headers: Headers, body: bytes) -> None:
        """Answer with a whole body (sent with a ``Content-Length``)."""
        self.status = status
        self.response = web.Response(
            status=status, reason=_REASONS.get(status), headers=dict(headers), body=body
        )

    async def start_stream(self, status: int, headers: Headers) -> None:
        """Begin a chunked response; its headers leave with the first chunk."""
        self.status = status
        response = web.StreamResponse(status=status, reason=_REASONS.get(status), headers=dict(headers))
        response.enable_chunked_encoding()
        self.response = response
        await response.prepare(self.request)

    async def write_chunk(self, data: bytes) -> None:
        if data and self.response is not None:
            await self.response.write(data)

    async def end_stream(self) -> None:
        if self.response is not None:
            await self.response.write_eof()

    async def reset(self) -> None:
        """Drop the connection with a TCP reset and no response, like a crashed proxy.

        Never returns: the lost connection cancels this handler, which then ends quietly.
        """
        transport = self.request.transport
        self.closing = True
        if transport is not None:
            sock = transport.get_extra_info("socket")
            if sock is not None:
                # Linger 0 turns close() into a TCP RST: the client sees "connection reset".
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            transport.abort()
        await asyncio.Event().wait()


Handler = Callable[[Exchange], Awaitable[None]]


class _CountingServer(web.Server):
    """aiohttp's low-level server, counting the connections it opens and loses."""

    def __init__(
        self, handler: Callable[[web.BaseRequest], Awaitable[web.StreamResponse]], stats: EmulatorStats
    ) -> None:
        super().__init__(
            handler,
            request_factory=self._request,
            handler_cancellation=True,
            access_log=None,  # the statistics are the log; a line per request costs a third of the CPU
        )
        self._stats = stats

    def connection_made(self, handler: Any, transport: asyncio.Transport) -> None:
        super().connection_made(handler, transport)
        self._stats.connections_open += 1
        self._stats.connections_total += 1

    def connection_lost(self, handler: Any, exc: BaseException | None = None) -> None:
        super().connection_lost(handler, exc)
        self._stats.connections_open -= 1

    def _request(self, message: Any, payload: Any, protocol: Any, writer: Any, task: Any) -> web.BaseRequest:
        return web.BaseRequest(message, payload, protocol, writer, task, self._loop, client_max_size=MAX_BODY)


class HttpServer:
    """Serves ``handler`` on ``host:port`` (port 0 picks a free one) until ``stop``."""

    def __init__(self, handler: Handler, stats: EmulatorStats, *, host: str, port: int) -> None:
        self._handler = handler
        self._stats = stats
        self._host = host
        self._requested_port = port
        self._web: _CountingServer | None = None
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._stopping = False
        self.port = 0

    async def start(self) -> None:
        self._stopping = False
        self._web = _CountingServer(self._serve, self._stats)
        self._server = await asyncio.get_running_loop().create_server(
            self._web, self._host, self._requested_port, reuse_address=True, backlog=BACKLOG
        )
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        """Stop listening, drop every connection at once and wait for the handlers to end."""
        if self._server is None or self._web is None:
            return
        self._stopping = True
        self._server.close()
        for connection in self._web.connections:
            if connection.transport is not None:
                connection.transport.abort()  # idle keep-alive connections too: no grace period
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self._server.wait_closed()
        await asyncio.sleep(0)  # let the aborted connections report themselves lost
        self._server = self._web = None

    async def _serve(self, request: web.BaseRequest) -> web.StreamResponse:
        exchange = Exchange(request)
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        self._stats.request_started()
        try:
            await self._handler(exchange)
        except asyncio.CancelledError:
            if not exchange.closing and not self._stopping:
                self._stats.aborted += 1  # the client closed the connection mid-request
            if exchange.response is None or not exchange.response.prepared:
                exchange.status = None  # nothing reached the client
            raise
        except Exception:
            log.exception("emulator handler failed on %s %s", request.method, request.path)
            if exchange.response is None or not exchange.response.prepared:
                exchange.respond(500, [("content-type", "text/plain")], b"emulator bug\n")
                if exchange.response is not None:
                    exchange.response.force_close()  # the connection's state is unknown: start afresh
        finally:
            self._stats.request_finished(request.path, exchange.status)
            if task is not None:
                self._tasks.discard(task)
        assert exchange.response is not None, "every handler answers, resets or hangs"
        return exchange.response
