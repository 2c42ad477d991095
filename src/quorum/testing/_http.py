"""A small HTTP/1.1 server on ``asyncio.Protocol``, just enough for API clients.

Keep-alive connections, requests with ``Content-Length`` bodies, replies with a
``Content-Length`` body or chunked (for server-sent events), and a deliberate
connection reset. One request is served at a time per connection, in order, as
HTTP/1.1 requires. When the client closes a connection while its request is still
being answered, the handler task is cancelled and the request counts as aborted, so a
hanging or slow answer never outlives the caller that gave up on it.

A Protocol rather than streams: ``connection_lost`` tells us at once that a client went
away, which is exactly the event the emulator must notice and count.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import struct
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from http import HTTPStatus

from quorum.testing._stats import EmulatorStats

log = logging.getLogger(__name__)

MAX_HEAD = 64 * 1024
MAX_BODY = 32 * 1024 * 1024
# Fan-outs open hundreds of connections at once; the default backlog of 100 drops some.
BACKLOG = 2048
_REASONS = {529: "Overloaded"}

Headers = Sequence[tuple[str, str]]


@dataclass(frozen=True, slots=True)
class HttpRequest:
    method: str
    path: str
    query: str
    headers: dict[str, str]  # names lower-cased
    body: bytes
    keep_alive: bool


class Exchange:
    """The answering side of one request: a full response, a chunked stream, or a reset."""

    __slots__ = ("_conn", "keep_alive", "started", "status")

    def __init__(self, conn: _Connection, keep_alive: bool) -> None:
        self._conn = conn
        self.keep_alive = keep_alive
        self.status: int | None = None
        self.started = False

    def respond(self, status: int, headers: Headers, body: bytes) -> None:
        """Send a whole response with a ``Content-Length`` body."""
        head = self._head(status, [*headers, ("content-length", str(len(body)))])
        self._conn.write(head + body)

    def start_stream(self, status: int, headers: Headers) -> None:
        """Send the status line and headers of a chunked response."""
        self._conn.write(self._head(status, [*headers, ("transfer-encoding", "chunked")]))

    def write_chunk(self, data: bytes) -> None:
        if data:
            self._conn.write(b"%x\r\n%b\r\n" % (len(data), data))

    def end_stream(self) -> None:
        self._conn.write(b"0\r\n\r\n")

    def reset(self) -> None:
        """Drop the connection with a TCP reset and no response, like a crashed proxy."""
        self.keep_alive = False
        self._conn.reset()

    def _head(self, status: int, headers: Headers) -> bytes:
        self.status, self.started = status, True
        reason = _REASONS.get(status) or _reason(status)
        lines = [f"HTTP/1.1 {status} {reason}"]
        lines += [f"{name}: {value}" for name, value in headers]
        lines.append("connection: " + ("keep-alive" if self.keep_alive else "close"))
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


Handler = Callable[[HttpRequest, Exchange], Awaitable[None]]


class HttpServer:
    """Serves ``handler`` on ``host:port`` (port 0 picks a free one) until ``stop``."""

    def __init__(self, handler: Handler, stats: EmulatorStats, *, host: str, port: int) -> None:
        self._handler = handler
        self._stats = stats
        self._host = host
        self._requested_port = port
        self._server: asyncio.Server | None = None
        self._connections: set[_Connection] = set()
        self.port = 0

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: _Connection(self._handler, self._stats, self._connections),
            self._host,
            self._requested_port,
            reuse_address=True,
            backlog=BACKLOG,
        )
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        """Stop listening, drop every connection and wait for the handlers to finish."""
        if self._server is None:
            return
        self._server.close()
        tasks = [c.abort() for c in list(self._connections)]
        await asyncio.gather(*(t for t in tasks if t is not None), return_exceptions=True)
        await self._server.wait_closed()
        self._server = None


class _Connection(asyncio.Protocol):
    def __init__(self, handler: Handler, stats: EmulatorStats, live: set[_Connection]) -> None:
        self._handler = handler
        self._stats = stats
        self._live = live  # the server's open connections, to drop them all at stop
        self._transport: asyncio.Transport | None = None
        self._buffer = bytearray()
        self._head: _Head | None = None
        self._task: asyncio.Task[None] | None = None
        self._closing = False  # we closed it on purpose: not the client's doing

    # --- asyncio.Protocol -------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        self._live.add(self)
        self._stats.connections_open += 1
        self._stats.connections_total += 1

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        if self._task is None:
            self._dispatch()

    def connection_lost(self, exc: Exception | None) -> None:
        self._live.discard(self)
        self._stats.connections_open -= 1
        if self._task is not None and not self._task.done() and not self._closing:
            self._stats.aborted += 1
            self._task.cancel()

    # --- used by Exchange and HttpServer ----------------------------------------------

    def write(self, data: bytes) -> None:
        if self._transport is not None and not self._transport.is_closing():
            self._transport.write(data)

    def reset(self) -> None:
        if self._transport is None:
            return
        sock = self._transport.get_extra_info("socket")
        if sock is not None:
            # Linger 0 turns close() into a TCP RST: the client sees "connection reset".
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self._closing = True
        self._transport.abort()

    def abort(self) -> asyncio.Task[None] | None:
        self._closing = True
        task = self._task
        if task is not None:
            task.cancel()
        if self._transport is not None:
            self._transport.abort()
        return task

    # --- parsing and serving ----------------------------------------------------------

    def _dispatch(self) -> None:
        try:
            request = self._parse()
        except _Malformed as exc:
            self._refuse(exc.status, str(exc))
            return
        if request is not None:
            self._task = asyncio.get_running_loop().create_task(self._serve(request))

    def _parse(self) -> HttpRequest | None:
        if self._head is None:
            end = self._buffer.find(b"\r\n\r\n")
            if end < 0:
                if len(self._buffer) > MAX_HEAD:
                    raise _Malformed(431, "request head too large")
                return None
            self._head = _parse_head(bytes(self._buffer[:end]))
            del self._buffer[: end + 4]
        head = self._head
        if len(self._buffer) < head.length:
            return None
        body = bytes(self._buffer[: head.length])
        del self._buffer[: head.length]
        self._head = None
        path, _, query = head.target.partition("?")
        keep_alive = _keep_alive(head.version, head.headers)
        return HttpRequest(head.method, path, query, head.headers, body, keep_alive)

    async def _serve(self, request: HttpRequest) -> None:
        exchange = Exchange(self, request.keep_alive)
        self._stats.request_started()
        try:
            await self._handler(request, exchange)
        except Exception:
            log.exception("emulator handler failed on %s %s", request.method, request.path)
            if not exchange.started:
                exchange.keep_alive = False
                exchange.respond(500, [("content-type", "text/plain")], b"emulator bug\n")
        finally:
            self._stats.request_finished(request.path, exchange.status)
            self._task = None
        if not exchange.keep_alive:
            self._close()
        elif self._buffer:
            self._dispatch()  # a pipelined request is already waiting

    def _refuse(self, status: int, message: str) -> None:
        exchange = Exchange(self, keep_alive=False)
        exchange.respond(status, [("content-type", "text/plain")], message.encode() + b"\n")
        self._close()

    def _close(self) -> None:
        self._closing = True
        if self._transport is not None:
            self._transport.close()


class _Malformed(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True, slots=True)
class _Head:
    method: str
    target: str
    version: str
    headers: dict[str, str]
    length: int


def _parse_head(head: bytes) -> _Head:
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
        raise _Malformed(400, f"bad request line {lines[0][:80]!r}")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if not sep:
            raise _Malformed(400, f"bad header line {line[:80]!r}")
        headers[name.strip().lower()] = value.strip()
    if "transfer-encoding" in headers:
        raise _Malformed(411, "send the body with a Content-Length header, not chunked")
    try:
        length = int(headers.get("content-length", "0"))
    except ValueError:
        raise _Malformed(400, "Content-Length is not a number") from None
    if not 0 <= length <= MAX_BODY:
        raise _Malformed(413, f"body of {length} bytes is over the {MAX_BODY} byte limit")
    return _Head(parts[0], parts[1], parts[2], headers, length)


def _keep_alive(version: str, headers: dict[str, str]) -> bool:
    connection = headers.get("connection", "").lower()
    if version == "HTTP/1.0":
        return connection == "keep-alive"
    return connection != "close"


def _reason(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Unknown"
