"""A lean HTTP/1.1 client on asyncio + httptools: one keep-alive connection pool per origin, streamed bodies.

The router calls model servers on every request; a general client (httpx over httpcore, anyio and h11) spent
about half of the router's Python time on its own bookkeeping. This client does what the engine calls need
and nothing more, the way the edge's server does (`aigw_server.edge.protocol`):

- `Pool.request` sends one request (body with Content-Length) on an idle connection of the origin, the most
  recently used first, or on a new one (connect timeout `connect_timeout`); `http://` and `https://` (the
  default SSL context: certificates and host name verified).
- The response's body arrives as it is read (Content-Length, chunked, or delimited by the connection's close);
  httptools de-chunks it. A consumer that lags pauses reading from the socket until it catches up.
- Every wait for the server (the answer's head, the next part of the body, a full send buffer) is bounded by
  the request's `timeout`.
- A connection goes back to the pool only after its response was read to the end and both sides keep it
  alive; a response left before its end (cancellation, deadline, error) closes its connection, so the server
  sees the client gone. An idle connection the peer closed is dropped, never handed out; one idle longer than
  `idle_expiry` is closed; at most `max_idle` stay idle.
- Nothing is retried: a POST that may have reached the server is the caller's to judge.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections import deque
from collections.abc import AsyncIterator
from typing import cast
from urllib.parse import urlsplit

import httptools

_HIGH_WATER = 256 * 1024  # buffered body bytes above which reading pauses
_LOW_WATER = 64 * 1024


class HttpError(Exception):
    """A request that got no complete answer."""


class ConnectFailed(HttpError):
    """No connection: refused, unresolvable, unreachable, or the TLS handshake failed."""


class TimedOut(HttpError):
    """The server did not connect, answer, or take the request within the timeout."""


class ConnectionBroken(HttpError):
    """The connection failed mid-request: reset, closed early, or the answer was not valid HTTP/1.1."""


class _Connection(asyncio.Protocol):
    """One TCP (or TLS) connection and the response being read on it."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.dead = False  # closed, or no longer fit for another request
        self.idle_since = 0.0
        self.response: Response | None = None
        self._drained: asyncio.Future[None] | None = None

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's transports do not subclass asyncio's

    def data_received(self, data: bytes) -> None:
        response = self.response
        if response is None or response._done:  # unasked-for bytes: the connection is not trusted again
            self.close()
            return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            response._fail(ConnectionBroken("the server's answer is not valid HTTP/1.1"))
            self.close()

    def eof_received(self) -> bool:
        self.dead = True
        response = self.response
        if response is not None:
            response._eof()
        return False  # close our side too

    def connection_lost(self, exc: Exception | None) -> None:
        self.dead = True
        response = self.response
        if response is not None:
            response._eof()
        drained = self._drained
        if drained is not None and not drained.done():
            drained.set_exception(ConnectionBroken("the server closed the connection"))

    def pause_writing(self) -> None:
        if self._drained is None:
            self._drained = self._loop.create_future()

    def resume_writing(self) -> None:
        drained = self._drained
        self._drained = None
        if drained is not None and not drained.done():
            drained.set_result(None)

    # httptools callbacks, forwarded to the response being read

    def on_header(self, name: bytes, value: bytes) -> None:
        assert self.response is not None
        self.response.headers.append((name.lower(), value))

    def on_headers_complete(self) -> None:
        assert self.response is not None
        self.response._headers_complete(self.parser.get_status_code())

    def on_body(self, body: bytes) -> None:
        assert self.response is not None
        self.response._body(body)

    def on_message_complete(self) -> None:
        assert self.response is not None
        self.response._complete(self.parser.should_keep_alive())

    # the pool's side

    async def send(self, data: bytes, timeout: float) -> None:
        assert self.transport is not None
        self.transport.write(data)
        drained = self._drained
        if drained is not None:
            try:
                async with asyncio.timeout(timeout):
                    await drained
            except TimeoutError:
                raise TimedOut("the server did not take the request in time") from None

    def close(self) -> None:
        """Closes at once (an unfinished answer is abandoned: the server sees the connection gone)."""
        self.dead = True
        if self.transport is not None:
            self.transport.abort()


class Response:
    """The status and headers of an answer; its body is read with `read()` or iterated in parts as they arrive.

    `close()` (also by `async with`) ends it: the connection returns to the pool when the body was read to
    its end and both sides keep it alive, and is closed otherwise.
    """

    def __init__(self, pool: Pool, conn: _Connection, timeout: float) -> None:
        self.status = 0
        self.headers: list[tuple[bytes, bytes]] = []  # names lower-cased
        self._pool = pool
        self._conn: _Connection | None = conn
        self._timeout = timeout
        self._parts: deque[bytes] = deque()
        self._buffered = 0
        self._paused = False
        self._done = False  # the whole body has arrived
        self._keep_alive = False
        self._until_eof = False  # the body ends where the connection does
        self._error: HttpError | None = None
        self._waiter: asyncio.Future[None] | None = None

    async def __aenter__(self) -> Response:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()

    # fed by the connection

    def _headers_complete(self, status: int) -> None:
        if status < 200:  # an informational answer: the real one follows
            return
        self.status = status
        framed = any(name in (b"content-length", b"transfer-encoding") for name, _ in self.headers)
        self._until_eof = not framed and status not in (204, 304)
        self._wake()

    def _body(self, data: bytes) -> None:
        self._parts.append(data)
        self._buffered += len(data)
        if self._buffered > _HIGH_WATER and not self._paused and self._conn is not None:
            assert self._conn.transport is not None
            self._conn.transport.pause_reading()
            self._paused = True
        self._wake()

    def _complete(self, keep_alive: bool) -> None:
        if not self.status:  # the end of an informational answer
            self.headers = []
            return
        self._done = True
        self._keep_alive = keep_alive
        self._wake()

    def _eof(self) -> None:
        if self._done:
            return
        if self.status and self._until_eof:
            self._done = True
        else:
            self._fail(ConnectionBroken("the server closed the connection before answering in full"))
        self._wake()

    def _fail(self, error: HttpError) -> None:
        if self._error is None and not self._done:
            self._error = error
        self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def _wait(self) -> None:
        if self._error is not None:
            raise self._error
        waiter = self._waiter = asyncio.get_running_loop().create_future()
        timer = asyncio.get_running_loop().call_later(self._timeout, _expire, waiter)
        try:
            await waiter
        finally:
            timer.cancel()
            self._waiter = None
        if self._error is not None:
            raise self._error

    # the caller's side

    async def _head(self) -> None:
        while not self.status:
            await self._wait()

    async def aiter_bytes(self) -> AsyncIterator[bytes]:
        """The body's parts as they arrive, until its end; an incomplete body raises `HttpError`."""
        while True:
            if self._parts:
                data = self._parts.popleft()
                self._buffered -= len(data)
                if self._paused and self._buffered < _LOW_WATER and self._conn is not None:
                    self._paused = False
                    assert self._conn.transport is not None
                    self._conn.transport.resume_reading()
                yield data
            elif self._done:
                return
            else:
                await self._wait()

    async def read(self) -> bytes:
        """The whole body."""
        if self._done:  # the usual case: a small answer came with its head
            data = b"".join(self._parts)
            self._parts.clear()
            self._buffered = 0
            return data
        return b"".join([part async for part in self.aiter_bytes()])

    def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is None:
            return
        conn.response = None
        if self._done and self._keep_alive and not conn.dead:
            if self._paused:
                assert conn.transport is not None
                conn.transport.resume_reading()
            self._pool._release(conn)
        else:
            self._pool._discard(conn)


def _expire(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_exception(TimedOut("the server did not answer in time"))


class Pool:
    """Keep-alive connections to one origin (`http://host:port` or `https://host:port`, any path ignored)."""

    def __init__(
        self,
        base_url: str,
        *,
        max_idle: int,
        idle_expiry: float = 60.0,
        connect_timeout: float = 5.0,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        url = urlsplit(base_url)
        if url.scheme not in ("http", "https") or not url.hostname:
            raise ValueError(f"not an http:// or https:// URL: {base_url!r}")
        default_port = 443 if url.scheme == "https" else 80
        self.host = url.hostname
        self.port = url.port or default_port
        self.ssl: ssl.SSLContext | None = None
        if url.scheme == "https":
            self.ssl = ssl_context or ssl.create_default_context()
        host = f"[{self.host}]" if ":" in self.host else self.host
        self._host_header = (host if self.port == default_port else f"{host}:{self.port}").encode("ascii")
        self.max_idle = max_idle
        self.idle_expiry = idle_expiry
        self.connect_timeout = connect_timeout
        self._idle: list[_Connection] = []  # oldest first; taken from the end
        self._busy: set[_Connection] = set()
        self._closed = False

    @property
    def idle_connections(self) -> int:
        return len(self._idle)

    @property
    def busy_connections(self) -> int:
        return len(self._busy)

    async def request(self, method: str, path: str, headers: dict[str, str], body: bytes, *, timeout: float) -> Response:
        """Sends a request and returns once the answer's status and headers arrived; the body is the caller's
        to read, then `close()` the response (an unread or unfinished one closes its connection)."""
        if self._closed:
            raise ConnectFailed("the client is closed")
        head = self._head(method, path, headers, len(body))
        conn = self._take() or await self._connect()
        self._busy.add(conn)
        response = Response(self, conn, timeout)
        conn.response = response
        try:
            if len(body) < 65536:  # one write for the usual small request
                await conn.send(head + body, timeout)
            else:
                await conn.send(head, timeout)
                await conn.send(body, timeout)
            await response._head()
        except BaseException:
            response.close()
            raise
        return response

    def _head(self, method: str, path: str, headers: dict[str, str], length: int) -> bytes:
        lines = [f"{method} {path} HTTP/1.1\r\n".encode("ascii"), b"host: ", self._host_header, b"\r\n"]
        for name, value in headers.items():
            line = f"{name}: {value}\r\n"
            if "\r" in line[:-2] or "\n" in line[:-2]:
                raise ValueError(f"header {name!r} holds a line break")
            lines.append(line.encode("latin-1"))
        lines.append(b"content-length: %d\r\n\r\n" % length)
        return b"".join(lines)

    def _take(self) -> _Connection | None:
        now = time.monotonic()
        while self._idle:
            conn = self._idle.pop()
            if conn.dead:
                continue
            if now - conn.idle_since > self.idle_expiry:  # the newest is stale, so are all older ones
                conn.close()
                for old in self._idle:
                    old.close()
                self._idle.clear()
                return None
            return conn
        return None

    async def _connect(self) -> _Connection:
        loop = asyncio.get_running_loop()
        conn = _Connection(loop)
        try:
            async with asyncio.timeout(self.connect_timeout):
                await loop.create_connection(
                    lambda: conn, self.host, self.port, ssl=self.ssl, server_hostname=self.host if self.ssl else None
                )
        except TimeoutError:
            conn.close()
            raise TimedOut(f"no connection to {self.host}:{self.port} within {self.connect_timeout:g}s") from None
        except OSError as exc:  # refused, unreachable, unresolvable; ssl.SSLError is an OSError too
            conn.close()
            raise ConnectFailed(f"cannot connect to {self.host}:{self.port}: {exc}") from None
        return conn

    def _release(self, conn: _Connection) -> None:
        self._busy.discard(conn)
        if self._closed:
            conn.close()
            return
        conn.idle_since = time.monotonic()
        self._idle.append(conn)
        if len(self._idle) > self.max_idle:
            self._idle.pop(0).close()

    def _discard(self, conn: _Connection) -> None:
        self._busy.discard(conn)
        conn.close()

    async def aclose(self) -> None:
        """Closes every connection, idle or busy; later requests fail."""
        self._closed = True
        for conn in [*self._idle, *self._busy]:
            conn.close()
        self._idle.clear()
        self._busy.clear()
        await asyncio.sleep(0)  # let the transports finish closing
