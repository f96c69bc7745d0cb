"""A small HTTP/1.1 keep-alive client for the calls made on every message (OpenAI, Graph).

Each message costs five POSTs; on httpx/httpcore each costs about a millisecond of CPU, most of
it in layers these calls do not use (anyio, the generic stream machinery, cookies, proxies).
This pool writes a request as bytes on an asyncio connection and parses the answer with
httptools (the parser uvicorn uses), so a call costs about what the socket does.

What it keeps from a full client: connections pooled per origin and reused while the server
keeps them alive, TLS with the certifi roots (or SSL_CERT_FILE's bundle), a connect and a read
deadline, a bound on open connections, and the distinction at-most-once needs:
`ConnectFailed` (nothing was sent: a refused connection fails at once, as the kernel answers)
versus `ResponseFailed` (the request may have reached the server). No proxies, redirects or
compression: neither API needs them.
"""

from __future__ import annotations

import asyncio
import os
import ssl
from dataclasses import dataclass
from typing import Any, cast
from urllib.parse import urlsplit

import certifi
import httptools

# As httpx: a connection idle this long may already be closed by the server; open a new one.
DEFAULT_KEEPALIVE_SECONDS = 5.0


class ConnectFailed(Exception):
    """No connection could be opened (refused, unreachable, TLS, connect deadline, pool full):
    the request was not sent."""

    def __init__(self, message: str, *, timed_out: bool = False) -> None:
        super().__init__(message)
        self.timed_out = timed_out


class ResponseFailed(Exception):
    """The request was written but no complete answer came back: it may have been processed."""


class ResponseTimeout(ResponseFailed):
    """No complete answer within the read deadline."""


@dataclass(frozen=True, slots=True)
class Answer:
    """A complete HTTP response."""

    status: int
    headers: list[tuple[bytes, bytes]]
    body: bytes


@dataclass(frozen=True, slots=True)
class Origin:
    """Where a pool connects: scheme, host and port of a URL."""

    scheme: str
    host: str
    port: int

    @classmethod
    def of(cls, url: str) -> Origin:
        """The origin of an absolute http(s) URL."""
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an absolute http(s) URL: {url!r}")
        default = 443 if parts.scheme == "https" else 80
        return cls(parts.scheme, parts.hostname, parts.port or default)

    @property
    def host_header(self) -> str:
        """The Host header value (the port only when it is not the scheme's default)."""
        default = 443 if self.scheme == "https" else 80
        return self.host if self.port == default else f"{self.host}:{self.port}"


class _Connection(asyncio.Protocol):
    """One connection: one request at a time, its answer parsed as the bytes arrive."""

    def __init__(self) -> None:
        self.transport: asyncio.WriteTransport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.closed = False
        self.idle_since = 0.0
        self._waiter: asyncio.Future[Answer] | None = None
        self._headers: list[tuple[bytes, bytes]] = []
        self._body: list[bytes] = []
        self._until_eof = False
        self._keep_alive = False

    # --- asyncio.Protocol ---
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports have the methods but do not subclass asyncio's classes.
        self.transport = cast(asyncio.WriteTransport, transport)

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as error:
            self._fail(ResponseFailed(f"malformed response: {type(error).__name__}"))
            self.close()

    def eof_received(self) -> bool:
        return False  # close the transport: connection_lost settles the waiter

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        waiter = self._waiter
        if waiter is None or waiter.done():
            return
        if self._until_eof and exc is None:
            # A body delimited by the end of the connection (no length, not chunked).
            waiter.set_result(self._answer())
        else:
            self._fail(ResponseFailed("connection closed before the response was complete"))

    # --- httptools callbacks ---
    def on_message_begin(self) -> None:
        self._headers = []
        self._body = []
        self._until_eof = False

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers.append((name, value))

    def on_headers_complete(self) -> None:
        names = {name.lower() for name, _ in self._headers}
        self._until_eof = b"content-length" not in names and b"transfer-encoding" not in names

    def on_body(self, body: bytes) -> None:
        self._body.append(body)

    def on_message_complete(self) -> None:
        # Asked here: once the parser returns it has reset for the next message.
        self._keep_alive = self.parser.should_keep_alive()
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(self._answer())

    # --- use ---
    async def exchange(self, request: bytes) -> Answer:
        """Write `request` and wait for its complete answer."""
        assert self.transport is not None
        self._waiter = asyncio.get_running_loop().create_future()
        self._keep_alive = False
        self.transport.write(request)
        return await self._waiter

    def reusable(self) -> bool:
        """Whether the last answer left the connection open for another request."""
        return not self.closed and self._keep_alive

    def close(self) -> None:
        """Close the connection (at once: nothing is left to flush)."""
        self.closed = True
        if self.transport is not None:
            self.transport.abort()

    def _answer(self) -> Answer:
        body = self._body[0] if len(self._body) == 1 else b"".join(self._body)
        return Answer(self.parser.get_status_code(), self._headers, body)

    def _fail(self, error: Exception) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_exception(error)


class HttpPool:
    """Keep-alive connections to one origin, at most `max_connections` open at a time."""

    def __init__(
        self,
        origin: Origin,
        *,
        connect_timeout: float,
        read_timeout: float | None,
        max_connections: int = 20,
        keepalive_seconds: float = DEFAULT_KEEPALIVE_SECONDS,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.origin = origin
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self.keepalive_seconds = keepalive_seconds
        self._ssl: ssl.SSLContext | None = None
        if origin.scheme == "https":
            self._ssl = ssl_context or default_ssl_context()
        self._slots = asyncio.Semaphore(max_connections)
        self._idle: list[_Connection] = []
        self._closed = False

    async def request(
        self, head: bytes, body: bytes, *, read_timeout: float | None = None
    ) -> Answer:
        """Send one request (`head` is its request line and headers, ending in a blank line)
        and return its answer."""
        if self._closed:
            raise ConnectFailed("the pool is closed")
        await self._acquire_slot()
        try:
            connection = await self._connection()
            try:
                async with asyncio.timeout(read_timeout or self.read_timeout):
                    answer = await connection.exchange(head + body if body else head)
            except TimeoutError:
                connection.close()
                raise ResponseTimeout("no answer within the read deadline") from None
            except BaseException:
                connection.close()  # also on cancellation: a late answer must not be reused
                raise
            if connection.reusable() and not self._closed:
                connection.idle_since = asyncio.get_running_loop().time()
                self._idle.append(connection)
            else:
                connection.close()
            return answer
        finally:
            self._slots.release()

    async def aclose(self) -> None:
        """Close every idle connection; later requests fail with ConnectFailed."""
        self._closed = True
        while self._idle:
            self._idle.pop().close()

    async def _acquire_slot(self) -> None:
        if not self._slots.locked():
            await self._slots.acquire()  # returns without suspending
            return
        try:
            async with asyncio.timeout(self.connect_timeout):
                await self._slots.acquire()
        except TimeoutError:
            raise ConnectFailed("no free connection", timed_out=True) from None

    async def _connection(self) -> _Connection:
        now = asyncio.get_running_loop().time()
        while self._idle:
            connection = self._idle.pop()
            if not connection.closed and now - connection.idle_since < self.keepalive_seconds:
                return connection
            connection.close()
        return await self._open()

    async def _open(self) -> _Connection:
        loop = asyncio.get_running_loop()
        origin = self.origin
        extra: dict[str, Any] = {}
        if self._ssl is not None:
            extra = {"ssl": self._ssl, "server_hostname": origin.host}
        try:
            async with asyncio.timeout(self.connect_timeout):
                _, connection = await loop.create_connection(
                    _Connection, origin.host, origin.port, **extra
                )
        except TimeoutError:
            raise ConnectFailed("connect deadline passed", timed_out=True) from None
        except OSError as error:  # refused, unreachable, DNS, TLS (ssl.SSLError is an OSError)
            raise ConnectFailed(f"cannot connect: {type(error).__name__}") from error
        return connection


def default_ssl_context() -> ssl.SSLContext:
    """TLS for HTTP/1.1 trusting certifi's roots (the ones httpx trusts), or, when the
    SSL_CERT_FILE variable names a PEM bundle, that bundle instead (as httpx and OpenSSL read
    it: for a TLS-inspecting proxy, the bundle must hold the public roots as well).

    Raises ValueError naming the variable when that file cannot be loaded."""
    cafile = os.environ.get("SSL_CERT_FILE") or None
    try:
        context = ssl.create_default_context(cafile=cafile or certifi.where())
    except (OSError, ValueError) as error:  # ssl.SSLError is an OSError
        if cafile is None:
            raise
        raise ValueError(f"SSL_CERT_FILE={cafile!r}: not a PEM CA bundle ({error})") from None
    context.set_alpn_protocols(["http/1.1"])
    return context


def request_head(
    method: str, target: str, headers: list[tuple[str, str]], content_length: int
) -> bytes:
    """The request line and headers of a request with a body of `content_length` bytes."""
    lines = [f"{method} {target} HTTP/1.1"]
    lines += [f"{name}: {value}" for name, value in headers]
    lines.append(f"content-length: {content_length}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
