"""A deadline for reading each request, so slow or stalled clients cannot hold connections.

uvicorn bounds the idle time between requests on a kept-alive connection, but not the time a
client takes to send one: a client that connects and sends nothing, or sends its headers or
body a byte at a time, holds a connection (and, once its headers are in, a task waiting on
the body) for as long as it likes. A few thousand of them exhaust the server.

`read_deadline_protocol(seconds)` is uvicorn's httptools protocol with one timer per request:
armed when the connection opens or a request's first byte arrives, cleared when the whole
request (headers and body) has been read. When it fires, the connection is closed; a handler
already waiting for the body sees the client disconnect. Handling the request, however long
(a task callback waiting for an LLM), is not bounded by it.

Each closed connection is counted (`pyloto.http.slow_clients.closed`) and logged within the
refusals' rate limit (`slow_client_closed`, INFO): a few lines a minute however many clients
stall, so a flood of them cannot fill the log.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from opentelemetry.metrics import Counter, NoOpCounter
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from pyloto_corp.http.rejections import Rejections


class _ReadDeadlineProtocol(HttpToolsProtocol):
    """HttpToolsProtocol closing a connection whose request is not read in time."""

    read_timeout_seconds = 10.0
    closed: Rejections  # notes each connection closed at its deadline

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._arm()

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._disarm()

    def _arm(self) -> None:
        if self._deadline is None:
            self._deadline = self.loop.call_later(self.read_timeout_seconds, self._expired)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _expired(self) -> None:
        self._deadline = None
        if not self.transport.is_closing():
            self.closed.note("read_deadline")
            self.transport.close()


def read_deadline_protocol(
    seconds: float, closed: Counter | None = None
) -> type[HttpToolsProtocol]:
    """uvicorn's `http` protocol class, closing connections whose request takes longer than
    `seconds` to arrive, each counted in `closed` (if given) and logged within a rate limit."""
    counter = closed if closed is not None else NoOpCounter("pyloto.http.slow_clients.closed")
    notes = Rejections(counter, event="slow_client_closed", level=logging.INFO)
    attributes = {"read_timeout_seconds": seconds, "closed": notes}
    return type("ReadDeadlineProtocol", (_ReadDeadlineProtocol,), attributes)
