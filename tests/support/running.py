"""Local servers for the tests: started for a block and stopped after it."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Protocol, TypeVar


class Server(Protocol):
    """A test server that serves between start() and stop()."""

    def start(self) -> object:
        """Start serving."""

    def stop(self) -> object:
        """Stop serving."""


ServerT = TypeVar("ServerT", bound=Server)


@contextmanager
def running(server: ServerT) -> Iterator[ServerT]:
    """`server`, started for the block and stopped when it ends, however it ends."""
    server.start()
    try:
        yield server
    finally:
        server.stop()
