"""Redis round trips, counted with MONITOR: every command a client sent, told apart from
the commands Redis scripts ran inside one EVALSHA (MONITOR shows those as `[0 lua]`).

Commands a client sends between MULTI and EXEC go in one write (redis-py's transaction
pipelines) and count as one round trip; a non-transactional pipeline cannot be told apart
and counts one per command (pyloto uses one only in the sweeper, at start-up).
"""

from __future__ import annotations

import re
import socket
import threading
from collections import Counter
from typing import Any

_LINE = re.compile(r'^\d+\.\d+ \[\d+ (?P<client>[^\]]+)\] "(?P<command>[^"]+)"')


class Monitor:
    """Counts what MONITOR shows on a background thread until stop()."""

    def __init__(self, port: int, ignore_ports: set[int] | None = None) -> None:
        self.port = port
        self.ignore = {f"127.0.0.1:{p}" for p in ignore_ports or set()}
        self.commands: Counter[str] = Counter()  # sent by clients
        self.scripted: Counter[str] = Counter()  # run inside scripts
        self.round_trips = 0
        self._in_multi: set[str] = set()
        self._sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        self._sock.sendall(b"*1\r\n$7\r\nMONITOR\r\n")
        self._buffer = b""
        self._read_line()  # +OK
        self._sock.settimeout(0.2)
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _read_line(self) -> bytes | None:
        while b"\r\n" not in self._buffer:
            try:
                chunk = self._sock.recv(1 << 16)
            except TimeoutError:
                return None
            if not chunk:
                raise ConnectionError("MONITOR connection closed")
            self._buffer += chunk
        line, _, self._buffer = self._buffer.partition(b"\r\n")
        return line

    def _run(self) -> None:
        while not self._stopping.is_set():
            line = self._read_line()
            if line is not None:
                self._count(line.decode(errors="replace"))

    def _count(self, line: str) -> None:
        found = _LINE.match(line.lstrip("+"))
        if not found or found.group("client") in self.ignore:
            return
        client, command = found.group("client"), found.group("command").upper()
        if client == "lua":
            self.scripted[command] += 1
            return
        self.commands[command] += 1
        if command == "MULTI":
            self._in_multi.add(client)
            self.round_trips += 1
        elif command in ("EXEC", "DISCARD"):
            self._in_multi.discard(client)
        elif client not in self._in_multi:
            self.round_trips += 1

    def stop(self) -> dict[str, Any]:
        """Stop reading; what was counted."""
        self._stopping.set()
        self._thread.join(timeout=5)
        self._sock.close()
        return {
            "round_trips": self.round_trips,
            "client_commands": dict(self.commands.most_common()),
            "script_commands": dict(self.scripted.most_common()),
        }
