"""A local HTTP server that speaks the Graph API messages endpoint, for tests.

It checks the bearer token and validates every request against WhatsApp's schema and limits
(required fields, `to`, `type`, and `pyloto_corp.ai.limits.problems`): an invalid request is
answered 400 (code 100) AND kept in `violations`, which the test fixture asserts is empty.
Faults can be queued for the next message sends: a Graph error code, a 5xx, or a delay (the
send is recorded as accepted first, as when Meta accepts a request whose answer is lost).
"""

from __future__ import annotations

import json
import re
import ssl
import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any

from pyloto_corp.ai.limits import problems
from pyloto_corp.devtools.local_http import LocalServer
from pyloto_corp.domain.replies import reply_key

TOKEN = "EAAG-test-graph-token"
PHONE_NUMBER_ID = "106540352242922"
VERSION = "v21.0"

# Graph's error answers by code: (HTTP status, title), as Meta sends them.
ERRORS: dict[int, tuple[int, str]] = {
    130429: (400, "Rate limit hit"),
    131056: (400, "(Business Account, Consumer Account) pair rate limit hit"),
    131047: (400, "Re-engagement message"),
    131026: (400, "Message Undeliverable"),
    131051: (400, "Unsupported message type"),
    100: (400, "Invalid parameter"),
    190: (401, "Error validating access token: Session has expired"),
    131000: (500, "Something went wrong"),
    80007: (400, "Rate limit issues"),
    4: (400, "Application request limit reached"),
}

_WA_ID = re.compile(r"^\d{8,15}$")


@dataclass
class Fault:
    """What the server does to one message send instead of accepting it at once."""

    code: int | None = None  # a Graph error code from ERRORS
    status: int | None = None  # a bare HTTP status (e.g. 503 with no Graph error body)
    delay: float = 0.0  # accept and record the send, then answer after this long


@dataclass
class Send:
    """A message Meta would have delivered."""

    outbound_id: str
    body: dict[str, Any]
    answered: threading.Event = field(default_factory=threading.Event)  # answer written

    @property
    def callback(self) -> str:
        """The record id echoed in status webhooks."""
        return str(self.body.get("biz_opaque_callback_data", ""))

    def describe(self) -> str:
        """One line for the closing note."""
        kind = self.body.get("type")
        if kind == "interactive":
            kind = f"interactive/{self.body['interactive']['type']}"
        return f"{self.outbound_id} {kind} callback={self.callback}"


@dataclass
class FakeGraph:
    """The server's script and what it has seen."""

    token: str = TOKEN
    sends: list[Send] = field(default_factory=list)
    reads: list[dict[str, Any]] = field(default_factory=list)
    requests: list[dict[str, Any]] = field(default_factory=list)
    violations: list[str] = field(default_factory=list)
    base_url: str = ""  # set by start()
    tls: ssl.SSLContext | None = None  # serve HTTPS with this server-side context
    _faults: deque[Fault] = field(default_factory=deque)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _server: LocalServer | None = None

    def inject(self, *faults: Fault) -> None:
        """Apply these to the next message sends, in order (read receipts are not affected)."""
        with self._lock:
            self._faults.extend(faults)

    def sends_for(self, message_id: str) -> list[Send]:
        """Accepted sends replying to one record (carrying its reply key)."""
        key = reply_key(message_id)
        with self._lock:
            return [s for s in self.sends if s.callback == key]

    def message_requests(self) -> list[dict[str, Any]]:
        """Every message request received (accepted or not), oldest first."""
        with self._lock:
            return [r for r in self.requests if "status" not in r]

    def _violation(self, text: str) -> None:
        with self._lock:
            self.violations.append(text)

    def handle(
        self, path: str, auth: str, raw: bytes
    ) -> tuple[int, dict[str, Any], float, Send | None]:
        """(status, JSON answer, delay, the accepted send if any) for one POST."""
        if auth != f"Bearer {self.token}":
            self._violation(f"bad bearer token: {auth[:12]}…")
            return *_graph_error(190), None
        if path != f"/{VERSION}/{PHONE_NUMBER_ID}/messages":
            self._violation(f"unexpected path {path}")
            return 404, {"error": {"message": "Unknown path", "code": 100}}, 0.0, None
        try:
            body = json.loads(raw)
        except ValueError:
            self._violation("body is not JSON")
            return *_graph_error(100), None
        with self._lock:
            self.requests.append(body)
        broken = validate(body)
        if broken:
            self._violation("; ".join(broken))
            return *_graph_error(100), None
        if "status" in body:
            with self._lock:
                self.reads.append(body)
            return 200, {"success": True}, 0.0, None
        with self._lock:
            fault = self._faults.popleft() if self._faults else Fault()
        if fault.code is not None:
            return *_graph_error(fault.code), None
        if fault.status is not None:
            return fault.status, {"error": {"message": "Service unavailable"}}, 0.0, None
        send = Send(f"wamid.GRAPH{uuid.uuid4().hex.upper()}", body)
        with self._lock:
            self.sends.append(send)
        answer = {
            "messaging_product": "whatsapp",
            "contacts": [{"input": body["to"], "wa_id": body["to"]}],
            "messages": [{"id": send.outbound_id}],
        }
        return 200, answer, fault.delay, send

    def start(self) -> str:
        """Serve in a background thread; returns the base URL (WHATSAPP_API_BASE_URL)."""
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                raw = self.rfile.read(length)
                status, payload, delay, send = fake.handle(
                    self.path, self.headers.get("authorization", ""), raw
                )
                if delay:
                    time.sleep(delay)
                data = json.dumps(payload).encode()
                try:
                    self.send_response(status)
                    self.send_header("content-type", "application/json")
                    self.send_header("content-length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (a timeout test): the send stays recorded
                finally:
                    if send is not None:
                        send.answered.set()

            def log_message(self, *args: Any) -> None:
                pass

        self._server = LocalServer(Handler, ssl_context=self.tls)
        self.base_url = self._server.url
        return self.base_url

    def stop(self) -> None:
        """Stop serving."""
        if self._server is not None:
            self._server.stop()


def _graph_error(code: int) -> tuple[int, dict[str, Any], float]:
    status, title = ERRORS[code]
    error = {
        "message": f"({'#' if code < 1000 else ''}{code}) {title}",
        "type": "OAuthException",
        "code": code,
        "error_data": {"messaging_product": "whatsapp", "details": title},
        "fbtrace_id": "AbCdEfGhIjK",
    }
    return status, {"error": error}, 0.0


def validate(body: dict[str, Any]) -> list[str]:
    """What makes `body` an invalid Graph API messages request (empty when valid)."""
    if not isinstance(body, dict) or body.get("messaging_product") != "whatsapp":
        return ["messaging_product must be 'whatsapp'"]
    if "status" in body:
        return _validate_read(body)
    found: list[str] = []
    if body.get("recipient_type", "individual") != "individual":
        found.append("recipient_type must be 'individual'")
    if not isinstance(body.get("to"), str) or not _WA_ID.match(body["to"]):
        found.append("`to` must be a WhatsApp id (8-15 digits)")
    kind = body.get("type")
    if kind not in ("text", "interactive"):
        found.append(f"unexpected type {kind!r}")
    elif not isinstance(body.get(kind), dict):
        found.append(f"type {kind} without its `{kind}` object")
    context = body.get("context")
    if context is not None and not (
        isinstance(context, dict) and str(context.get("message_id", "")).startswith("wamid.")
    ):
        found.append("context.message_id must be an inbound wamid")
    callback = body.get("biz_opaque_callback_data")
    if not isinstance(callback, str) or not 0 < len(callback) <= 512:
        found.append("biz_opaque_callback_data must be 1-512 characters")
    return found + problems(body)


def _validate_read(body: dict[str, Any]) -> list[str]:
    found = []
    if body.get("status") != "read":
        found.append("a status request must be 'read'")
    if not str(body.get("message_id", "")).startswith("wamid."):
        found.append("read receipt without an inbound message_id")
    indicator = body.get("typing_indicator")
    if indicator is not None and indicator != {"type": "text"}:
        found.append("typing_indicator must be {'type': 'text'}")
    extra = set(body) - {"messaging_product", "status", "message_id", "typing_indicator"}
    if extra:
        found.append(f"unexpected keys in a read receipt: {sorted(extra)}")
    return found
