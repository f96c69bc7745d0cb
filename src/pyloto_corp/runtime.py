"""Process-level settings of a long-running server, and how `pyloto serve` runs uvicorn."""

from __future__ import annotations

import gc
import logging
import signal
import socket
from types import FrameType
from typing import Any

import uvicorn

log = logging.getLogger("pyloto_corp")

# uvicorn's exit code when the application did not start (its lifespan failed).
STARTUP_FAILED = 3


def freeze_startup_heap() -> int:
    """Take everything built before serving (modules, the app, its clients: hundreds of
    thousands of objects that live as long as the process) out of the cyclic garbage
    collector's scans; returns how many objects that is.

    Without it, each full collection walks all of them while requests wait: on a loaded
    server those pauses, tens of milliseconds every few seconds, are what the slowest
    webhooks' latency is made of. Objects frozen here are still freed by reference counting;
    only cycles among them are kept, and at start-up they are meant to live anyway.
    """
    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()


def listen_url(sock: socket.socket) -> str:
    """The URL a client reaches the bound socket at (a wildcard address names localhost's
    own, as a browser on the machine would use)."""
    host, port = sock.getsockname()[:2]
    if host in ("0.0.0.0", ""):  # noqa: S104 (read, not bound)
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{port}"


class _Server(uvicorn.Server):
    """uvicorn's server, saying once where it listens when the application has started."""

    def __init__(self, config: uvicorn.Config, announce: str, fields: dict[str, Any]) -> None:
        super().__init__(config)
        self.announce = announce
        self.fields = fields

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.started and not self.should_exit:
            log.info(self.announce, extra={"event": "serving", **self.fields})


def serve(config: uvicorn.Config, sock: socket.socket, ops_console: bool) -> int:
    """Serve on `sock` until SIGINT or SIGTERM; the process's exit code.

    uvicorn catches both signals, stops taking connections, lets the requests in flight
    finish, runs the application's shutdown, then raises the signal again for the handler
    it found: the default one would end the process with a KeyboardInterrupt traceback
    (SIGINT) or killed by the signal (SIGTERM). The handler installed here only notes it,
    so a stop is one line and exit code 0. What the stop cuts short (steps of the local
    queue) is in the store, and the next start re-queues it.
    """
    url = listen_url(sock)
    fields: dict[str, Any] = {"url": url}
    announce = f"pyloto serving on {url}"
    if ops_console:
        fields["ops_url"] = f"{url}/ops"
        announce += f" (operations console: {url}/ops)"
    server = _Server(config, announce, fields)
    received: list[int] = []

    def note(signum: int, _: FrameType | None) -> None:
        received.append(signum)

    previous = {signum: signal.signal(signum, note) for signum in (signal.SIGINT, signal.SIGTERM)}
    try:
        server.run(sockets=[sock])
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    if not server.started:
        return STARTUP_FAILED  # uvicorn logged why
    names = [signal.Signals(signum).name for signum in received]
    log.info("pyloto stopped", extra={"event": "stopped", "signals": names})
    return 0
