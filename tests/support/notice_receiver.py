"""A local HTTP server standing in for the notification webhook (Slack, n8n, Chatwoot...):
it answers each POST with the next scripted status and keeps what it received."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler

from pyloto_corp.devtools.local_http import LocalServer


@dataclass(frozen=True)
class Received:
    """One POST as it arrived."""

    path: str
    headers: dict[str, str]
    body: bytes
    answered: int


class NoticeReceiver:
    """Answers the POSTs with `statuses` in turn, then `then` for every later one; a status
    of 0 stalls that answer for `stall_seconds` before answering 200 (a timeout)."""

    def __init__(self, statuses: Iterable[int] = (), then: int = 200, stall_seconds: float = 0.0):
        self.script = list(statuses)
        self.then = then
        self.stall_seconds = stall_seconds
        self.received: list[Received] = []
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length") or 0))
                with receiver.lock:
                    status = receiver.script.pop(0) if receiver.script else receiver.then
                    headers = {key.lower(): value for key, value in self.headers.items()}
                    receiver.received.append(Received(self.path, headers, body, status or 200))
                if status == 0:
                    time.sleep(receiver.stall_seconds)
                    status = 200
                self.send_response(status)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args: object) -> None:
                pass

        self.server = LocalServer(Handler)

    @property
    def url(self) -> str:
        """The webhook URL to configure (HANDOFF_WEBHOOK_URL)."""
        return self.server.url + "/hooks/pyloto"

    def accepted(self) -> list[Received]:
        """The POSTs answered with a 2xx, in order."""
        with self.lock:
            return [item for item in self.received if 200 <= item.answered < 300]

    def bodies(self) -> list[bytes]:
        """The bodies received so far, in order."""
        with self.lock:
            return [item.body for item in self.received]

    def stop(self) -> None:
        """Stop serving."""
        self.server.stop()
