"""One pipelined Redis connection for the store's Lua script calls (EVALSHA).

A step costs two script calls; through redis-py each costs about a quarter of a millisecond
of CPU (command packing, the encoder, the script wrapper, asyncio streams and a timeout task)
and holds a pooled connection for its whole round trip. Here every caller writes its command
on one shared connection at once and awaits a future; Redis answers in order, so a FIFO of
futures matches the replies, which hiredis parses (the parser redis-py uses).

What it keeps from redis-py: the same URL (read from the redis-py client's pool: redis:// or
rediss://, AUTH, SELECT), a connect deadline and a per-command deadline, the same exception
classes (redis.exceptions: ConnectionError, TimeoutError, ResponseError and its kinds), and
at-most-once writes: a call is retried once only when it was certainly not written (the
connection was refused at once). A timeout or a lost connection fails every call pending on
it and drops it, since later replies could no longer be matched; the next call reconnects. A
NOSCRIPT reply (a restarted or flushed Redis: the script did not run) is answered by sending
the script's body with EVAL, which runs it and loads it again.
"""

from __future__ import annotations

import asyncio
import hashlib
import ssl
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any, cast

import hiredis
import redis.asyncio as redis
from redis._parsers.base import BaseParser
from redis.asyncio.connection import Connection, SSLConnection
from redis.exceptions import AuthenticationError, DataError, ResponseError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

Encodable = bytes | str | int | float

# What hiredis returns while a reply is incomplete (never a reply itself).
_NOT_ENOUGH_DATA = object()
# Wait before the one retry of a refused connection (redis-py's first backoff in connect()).
RETRY_BACKOFF_SECONDS = 0.05


class Script:
    """A Lua script: its body and SHA1, as EVALSHA names it."""

    __slots__ = ("body", "sha")

    def __init__(self, body: str) -> None:
        self.body = body.encode()
        self.sha = hashlib.sha1(self.body).hexdigest().encode()  # noqa: S324 (Redis's name)


def encode_arg(value: Encodable) -> bytes:
    """One argument as redis-py's Encoder writes it: bytes as they are, str as UTF-8, int and
    float as their repr; bool and anything else is refused."""
    kind = type(value)
    if kind is bytes:
        return cast(bytes, value)
    if kind is str:
        return cast(str, value).encode()
    if kind is int or kind is float:
        return repr(value).encode()
    if isinstance(value, bool):
        raise DataError("Invalid input of type: 'bool'. Convert to a bytes, string, int or float.")
    if isinstance(value, bytes | memoryview):
        return bytes(value)
    if isinstance(value, str):
        return value.encode()
    if isinstance(value, int | float):
        return repr(value).encode()
    raise DataError(f"Invalid input of type: {type(value).__name__!r}.")


def encode_command(*parts: bytes) -> bytes:
    """A RESP array of bulk strings."""
    out = [b"*%d\r\n" % len(parts)]
    for part in parts:
        out.append(b"$%d\r\n%b\r\n" % (len(part), part))
    return b"".join(out)


def _script_command(
    verb: bytes, name: bytes, keys: Sequence[str], args: Sequence[Encodable]
) -> bytes:
    out = [
        b"*%d\r\n$%d\r\n%b\r\n$%d\r\n%b\r\n"
        % (3 + len(keys) + len(args), len(verb), verb, len(name), name)
    ]
    count = b"%d" % len(keys)
    out.append(b"$%d\r\n%b\r\n" % (len(count), count))
    for key in keys:
        raw = key.encode()
        out.append(b"$%d\r\n%b\r\n" % (len(raw), raw))
    for arg in args:
        raw = encode_arg(arg)
        out.append(b"$%d\r\n%b\r\n" % (len(raw), raw))
    return b"".join(out)


# redis-py's own mapping of an error reply's code to its exception class (untyped there).
_parse_error = cast(Callable[[str], ResponseError], BaseParser.parse_error)


def _error(reply: ResponseError) -> ResponseError:
    """An error reply as the redis-py exception class its code names (NOSCRIPT, BUSY…)."""
    return _parse_error(str(reply))


class _Connection(asyncio.Protocol):
    """One connection to Redis: commands written at once, futures settled in reply order."""

    def __init__(self, timeout: float | None) -> None:
        self.timeout = timeout
        self.transport: asyncio.WriteTransport | None = None
        self.closed = False
        self.reader = hiredis.Reader(replyError=ResponseError, notEnoughData=_NOT_ENOUGH_DATA)
        # (future, deadline) per command written, oldest first.
        self.pending: deque[tuple[asyncio.Future[Any], float]] = deque()
        self._timer: asyncio.TimerHandle | None = None
        self._loop = asyncio.get_running_loop()

    # --- asyncio.Protocol ---
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports have the methods but do not subclass asyncio's classes.
        self.transport = cast(asyncio.WriteTransport, transport)

    def data_received(self, data: bytes) -> None:
        reader = self.reader
        reader.feed(data)
        pending = self.pending
        try:
            reply = reader.gets()
            while reply is not _NOT_ENOUGH_DATA:
                if not pending:
                    raise hiredis.ProtocolError("a reply nobody asked for")
                future = pending.popleft()[0]
                if not future.done():  # a cancelled caller: its reply is dropped
                    future.set_result(reply)
                reply = reader.gets()
        except hiredis.ProtocolError as error:
            self.fail(RedisConnectionError, f"Protocol error from Redis: {error}")

    def eof_received(self) -> bool:
        self.closed = True  # no command is written on it any more
        return False  # close the transport: connection_lost fails what is pending

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.fail(RedisConnectionError, "Connection closed by server.")

    # --- use ---
    def send(self, command: bytes) -> asyncio.Future[Any]:
        """Write `command`; its future is settled with its reply (an error reply as a
        ResponseError value), or fails with ConnectionError or TimeoutError."""
        assert self.transport is not None
        future = self._loop.create_future()
        self.transport.write(command)
        if self.timeout is None:
            self.pending.append((future, 0.0))
        else:
            deadline = self._loop.time() + self.timeout
            self.pending.append((future, deadline))
            if self._timer is None:
                self._timer = self._loop.call_at(deadline, self._check_deadline)
        return future

    def _check_deadline(self) -> None:
        # One timer per connection: the oldest pending command has the earliest deadline.
        self._timer = None
        if not self.pending:
            return
        deadline = self.pending[0][1]
        if deadline <= self._loop.time():
            self.fail(RedisTimeoutError, "Timeout reading from Redis")
        else:
            self._timer = self._loop.call_at(deadline, self._check_deadline)

    def fail(self, kind: type[Exception], message: str) -> None:
        """Fail every pending command with a `kind` error and drop the connection (its later
        replies could not be matched any more). Each caller gets an exception of its own, as
        each raise adds its frames to the traceback."""
        self.closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        pending, self.pending = self.pending, deque()
        for future, _ in pending:
            if not future.done():
                future.set_exception(kind(message))
        if self.transport is not None:
            self.transport.abort()


class RedisWire:
    """Script calls on one shared, pipelined connection to Redis, opened on first use and
    reopened after it is dropped."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        db: int = 0,
        username: str | None = None,
        password: str | None = None,
        ssl_context: ssl.SSLContext | None = None,
        connect_timeout: float | None = None,
        timeout: float | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self.db = db
        self.username = username
        self.password = password
        self.ssl_context = ssl_context
        self.connect_timeout = connect_timeout
        self.timeout = timeout
        self._connection: _Connection | None = None
        self._opening: asyncio.Task[_Connection] | None = None
        self._closed = False

    @classmethod
    def for_client(cls, client: redis.Redis) -> RedisWire | None:
        """A wire to the server a redis-py client connects to, with its credentials, db,
        TLS and timeouts; None when it is not a plain TCP or TLS connection (a Unix socket,
        a credential provider), which the wire does not support."""
        pool = client.connection_pool
        kwargs = dict(pool.connection_kwargs)
        kind = pool.connection_class
        if not issubclass(kind, Connection) or kwargs.get("credential_provider") is not None:
            return None
        if kind not in (Connection, SSLConnection):
            return None
        context = None
        if kind is SSLConnection:
            context = SSLConnection(**kwargs).ssl_context.get()
        return cls(
            str(kwargs.get("host", "localhost")),
            int(kwargs.get("port", 6379)),
            db=int(kwargs.get("db", 0) or 0),
            username=kwargs.get("username"),
            password=kwargs.get("password"),
            ssl_context=context,
            connect_timeout=kwargs.get("socket_connect_timeout"),
            timeout=kwargs.get("socket_timeout"),
        )

    async def evalsha(self, script: Script, keys: Sequence[str], args: Sequence[Encodable]) -> Any:
        """Run `script` (EVALSHA, or EVAL when Redis does not have it) and return its reply as
        redis-py would (bytes, ints, lists, None). Error replies raise ResponseError (or its
        kind); a lost or timed-out call raises ConnectionError or TimeoutError."""
        command = _script_command(b"EVALSHA", script.sha, keys, args)
        reply = await self._send(command)
        if isinstance(reply, ResponseError):
            error = _error(reply)
            if not str(reply).startswith("NOSCRIPT"):
                raise error
            # The script did not run: EVAL runs it and loads it for the next EVALSHA.
            reply = await self._send(_script_command(b"EVAL", script.body, keys, args))
            if isinstance(reply, ResponseError):
                raise _error(reply)
        return reply

    async def execute(self, *parts: Encodable) -> Any:
        """Any one command, its error reply raised (for checks and tests)."""
        reply = await self._send(encode_command(*(encode_arg(part) for part in parts)))
        if isinstance(reply, ResponseError):
            raise _error(reply)
        return reply

    async def _send(self, command: bytes) -> Any:
        connection = self._connection
        if connection is None or connection.closed:
            connection = await self._connected()
        return await connection.send(command)

    async def _connected(self) -> _Connection:
        if self._closed:
            raise RedisConnectionError("the Redis connection is closed")
        opening = self._opening
        if opening is None:
            opening = asyncio.get_running_loop().create_task(self._open_with_retry())
            opening.add_done_callback(self._opened)
            self._opening = opening
        # Shielded: a cancelled caller does not cancel the connect the others wait for.
        return await asyncio.shield(opening)

    def _opened(self, task: asyncio.Task[_Connection]) -> None:
        if self._opening is task:
            self._opening = None
        if task.cancelled() or task.exception() is not None:
            return
        connection = task.result()
        if self._closed:
            connection.fail(RedisConnectionError, "the Redis connection is closed")
        else:
            self._connection = connection

    async def _open_with_retry(self) -> _Connection:
        try:
            return await self._open()
        except _Refused:
            # Nothing was written: one retry, as redis-py's connect() makes.
            await asyncio.sleep(RETRY_BACKOFF_SECONDS)
        try:
            return await self._open()
        except _Refused as refused:
            raise RedisConnectionError(str(refused)) from refused.__cause__

    async def _open(self) -> _Connection:
        loop = asyncio.get_running_loop()
        extra: dict[str, Any] = {}
        if self.ssl_context is not None:
            extra = {"ssl": self.ssl_context, "server_hostname": self.host}
        where = f"{self.host}:{self.port}"
        try:
            async with asyncio.timeout(self.connect_timeout):
                _, connection = await loop.create_connection(
                    lambda: _Connection(self.timeout), self.host, self.port, **extra
                )
        except TimeoutError:
            raise RedisTimeoutError(f"Timeout connecting to {where}") from None
        except ssl.SSLError as error:
            raise RedisConnectionError(f"Error connecting to {where}: {error}") from error
        except OSError as error:
            raise _Refused(f"Error {error.errno} connecting to {where}. {error.strerror}.") from (
                error
            )
        try:
            await self._handshake(connection)
        except BaseException:
            connection.fail(RedisConnectionError, "handshake failed")
            raise
        return connection

    async def _handshake(self, connection: _Connection) -> None:
        """AUTH and SELECT, written together, as the first commands of the connection."""
        sent: list[asyncio.Future[Any]] = []
        if self.password is not None:
            auth = [self.password] if self.username is None else [self.username, self.password]
            sent.append(connection.send(encode_command(b"AUTH", *map(encode_arg, auth))))
        if self.db:
            sent.append(connection.send(encode_command(b"SELECT", encode_arg(self.db))))
        for future in sent:
            reply = await future
            if isinstance(reply, ResponseError):
                error = _error(reply)
                if isinstance(error, AuthenticationError | RedisConnectionError):
                    raise error
                raise RedisConnectionError(f"Redis refused the connection: {error}") from error

    async def aclose(self) -> None:
        """Close the connection; pending and later calls fail with ConnectionError."""
        self._closed = True
        if self._opening is not None:
            self._opening.cancel()
        if self._connection is not None:
            self._connection.fail(RedisConnectionError, "the Redis connection is closed")
            self._connection = None


class _Refused(Exception):
    """The connection could not be opened at once (refused, unreachable): nothing was
    written, so the call may be retried."""
