"""A local HTTP server that speaks the Graph API messages and media endpoints, for tests.

It serves one business number (PHONE_NUMBER_ID) unless a test adds more (`add_number`, each
with its own token if need be), and keeps which number every request went to: a request to
any other number is a violation.

It checks the bearer token and validates every request against WhatsApp's schema and limits
(required fields, `to` or `recipient`, `type`, and `pyloto_corp.ai.limits.problems`): an
invalid request is answered 400 (code 100) AND kept in `violations`, which the test fixture
asserts is empty. A reply names a WhatsApp id in `to` or a BSUID in `recipient` (both at
once is a violation: Meta lets `to` win). A BSUID in `to` is answered as Meta does, 200 with
a message id, but kept in `undelivered` (and `violations`), never in `sends`. Fault code
131062 answers as Meta does to a BSUID recipient it cannot serve.
Faults can be queued for the next message sends: a Graph error code, a 5xx, a 200 without a
message id, or a delay or a hold (the send is recorded as accepted first, as when Meta accepts a
request whose answer is lost). `accepted` says whether Meta took the send (it is kept in
`sends`, as a message the customer receives) whatever the answer: a 500 after the send went out.

Media added with `add_media` is served as Meta does: `GET /{version}/{media-id}` answers its
URL, type, size and sha256, and the URL (on this server, with a signed-looking query, fresh
at each info request) answers the bytes; both need the bearer token. `media_faults` script
errors per media id, and every media GET is recorded.
"""

from __future__ import annotations

import hashlib
import json
import re
import secrets
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
VERSION = "v26.0"  # the default WHATSAPP_API_VERSION: the fake answers only this one

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
    131052: (400, "Media download error"),
    131053: (400, "Media upload error"),
    # https://dualhook.com/docs/contacts-bsuid-api-changes (Meta's BSUID error codes)
    131062: (400, "Business-scoped User ID recipients are not supported for this message"),
}

_WA_ID = re.compile(r"^\d{8,15}$")
_BSUID = re.compile(r"^[A-Z]{2}\.(?:ENT\.)?[0-9A-Za-z]{1,128}$")
_MESSAGES_PATH = re.compile(rf"^/{re.escape(VERSION)}/(\d+)/messages$")


@dataclass
class Fault:
    """What the server does to one message send instead of accepting it at once."""

    code: int | None = None  # a Graph error code from ERRORS
    title: str | None = None  # the error's text instead of ERRORS' (a peer quoting someone)
    status: int | None = None  # a bare HTTP status (e.g. 503 with no Graph error body)
    delay: float = 0.0  # accept and record the send, then answer after this long
    # Meta took the send (kept in `sends`: the customer gets it) whatever it answers; None:
    # not when it answers an error (`code`, `status`), yes otherwise.
    accepted: bool | None = None
    no_id: bool = False  # answer 200 without `messages[].id`
    # The answer waits until the test sets this (a status webhook may arrive before it).
    hold: threading.Event | None = None

    @property
    def takes_send(self) -> bool:
        """Whether Meta keeps the send (delivers it) under this fault."""
        if self.accepted is not None:
            return self.accepted
        return self.code is None and self.status is None


@dataclass
class MediaFault:
    """What the server answers to a media's info or download requests instead of serving."""

    on: str  # "info" (GET /{version}/{media-id}) or "download" (GET of the media URL)
    status: int | None = None  # a bare HTTP status (404, 401, 500) with no Graph error body
    code: int | None = None  # a Graph error code from ERRORS (info requests)
    delay: float = 0.0  # wait this long before answering (then serve, unless status/code)
    times: int | None = None  # how many of those requests get it; None: every one


@dataclass
class Media:
    """A customer's media as Graph holds it; `sha256` and `file_size` are what is advertised."""

    media_id: str
    data: bytes
    mime_type: str
    sha256: str
    file_size: int
    content_length: bool = True  # False: the download is sent without its length
    number: str = PHONE_NUMBER_ID  # the business number it was sent to: its token fetches it


@dataclass
class MediaGet:
    """One media request the server received."""

    kind: str  # "info" or "download"
    media_id: str
    path: str  # with its query
    status: int = 0  # 0 until answered


@dataclass
class Send:
    """A message Meta would have delivered, and the business number it went from."""

    outbound_id: str
    body: dict[str, Any]
    answered: threading.Event = field(default_factory=threading.Event)  # answer written
    phone_number_id: str = PHONE_NUMBER_ID

    @property
    def callback(self) -> str:
        """The record id echoed in status webhooks."""
        return str(self.body.get("biz_opaque_callback_data", ""))

    @property
    def recipient(self) -> str:
        """Whom Meta delivers to: `to` when present (it wins over `recipient`), else the
        BSUID in `recipient`."""
        return str(self.body.get("to") or self.body.get("recipient", ""))

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
    # The business numbers served, each with the bearer token its requests must carry
    # (`token` for PHONE_NUMBER_ID unless a test says otherwise; see `add_number`).
    numbers: dict[str, str] = field(default_factory=dict)
    sends: list[Send] = field(default_factory=list)
    # Sends Meta answers 200 with an id and never delivers (a BSUID put in `to`).
    undelivered: list[Send] = field(default_factory=list)
    reads: list[dict[str, Any]] = field(default_factory=list)
    read_numbers: list[str] = field(default_factory=list)  # the number of each of `reads`
    requests: list[dict[str, Any]] = field(default_factory=list)
    request_numbers: list[str] = field(default_factory=list)  # the number of each request
    violations: list[str] = field(default_factory=list)
    base_url: str = ""  # set by start()
    tls: ssl.SSLContext | None = None  # serve HTTPS with this server-side context
    media: dict[str, Media] = field(default_factory=dict)
    media_faults: dict[str, list[MediaFault]] = field(default_factory=dict)
    media_gets: list[MediaGet] = field(default_factory=list)
    download_urls: list[str] = field(default_factory=list)  # every media URL handed out
    _downloads: dict[str, str] = field(default_factory=dict)  # URL path -> media id
    _faults: deque[Fault] = field(default_factory=deque)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _server: LocalServer | None = None

    def __post_init__(self) -> None:
        self.numbers.setdefault(PHONE_NUMBER_ID, self.token)

    def add_number(self, phone_number_id: str, token: str | None = None) -> None:
        """Serve one more business number, whose requests carry `token` (default: `token`)."""
        with self._lock:
            self.numbers[phone_number_id] = token or self.token

    def read_number(self, message_id: str) -> list[str]:
        """The business numbers the read receipts of one inbound message went through."""
        with self._lock:
            return [
                number
                for body, number in zip(self.reads, self.read_numbers, strict=True)
                if body.get("message_id") == message_id
            ]

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

    def add_media(
        self,
        media_id: str,
        data: bytes,
        mime_type: str,
        *,
        sha256: str | None = None,
        file_size: int | None = None,
        content_length: bool = True,
        number: str = PHONE_NUMBER_ID,
    ) -> Media:
        """Serve `data` as media `media_id`, advertising `sha256` (hex; the data's own when
        None) and `file_size` (its length when None), sent to business number `number`
        (whose token alone may fetch it)."""
        media = Media(
            media_id,
            data,
            mime_type,
            hashlib.sha256(data).hexdigest() if sha256 is None else sha256,
            len(data) if file_size is None else file_size,
            content_length,
            number,
        )
        with self._lock:
            self.media[media_id] = media
        return media

    def fail_media(self, media_id: str, *faults: MediaFault) -> None:
        """Apply these to the media's requests, the first matching fault with times left."""
        with self._lock:
            self.media_faults.setdefault(media_id, []).extend(faults)

    def media_requests(self, media_id: str, kind: str) -> int:
        """How many `kind` ("info" or "download") requests of the media were received."""
        with self._lock:
            return sum(
                1 for get in self.media_gets if get.media_id == media_id and get.kind == kind
            )

    def handle_get(self, path: str, auth: str) -> tuple[int, dict[str, str], bytes]:
        """(status, headers, body) for one GET: a media's info or its download."""
        route = path.split("?", 1)[0]
        with self._lock:
            downloading = self._downloads.get(route)
        kind, media_id = ("download", downloading) if downloading else ("info", "")
        if kind == "info":
            prefix = f"/{VERSION}/"
            if not route.startswith(prefix) or "/" in route[len(prefix) :]:
                self._violation(f"unexpected GET {route}")
                return _json_answer(404, {"error": {"message": "Unknown path", "code": 100}})
            media_id = route[len(prefix) :]
        get = MediaGet(kind, media_id, path)
        with self._lock:
            self.media_gets.append(get)  # on arrival: a request answered late still counts
        get.status, headers, body = self._media_answer(kind, media_id, auth)
        return get.status, headers, body

    def _media_answer(
        self, kind: str, media_id: str, auth: str
    ) -> tuple[int, dict[str, str], bytes]:
        with self._lock:
            media = self.media.get(media_id)
            number = media.number if media is not None else PHONE_NUMBER_ID
            token = self.numbers.get(number, self.token)
        if auth != f"Bearer {token}":
            self._violation(f"media {kind} with a bad bearer token: {auth[:12]}…")
            return _json_answer(*_graph_error(190)[:2])
        fault = self._take_media_fault(media_id, kind)
        if fault is not None and fault.delay:
            time.sleep(fault.delay)  # this request's own server thread
        if fault is not None and fault.code is not None:
            return _json_answer(*_graph_error(fault.code)[:2])
        if fault is not None and fault.status is not None:
            return _json_answer(fault.status, {"error": {"message": f"HTTP {fault.status}"}})
        with self._lock:
            media = self.media.get(media_id)
        if media is None:  # Meta answers an unknown id with code 100, subcode 33
            error = {"message": "Unsupported get request.", "code": 100, "error_subcode": 33}
            return _json_answer(400, {"error": error})
        if kind == "download":
            headers = {"content-type": media.mime_type}
            if media.content_length:
                headers["content-length"] = str(len(media.data))
            return 200, headers, media.data
        return _json_answer(200, self._media_info(media))

    def _media_info(self, media: Media) -> dict[str, Any]:
        """Meta's answer to `GET /{media-id}`, with a fresh download URL."""
        route = f"/media-download/{secrets.token_urlsafe(12)}"
        query = f"ext={int(time.time())}&hash=ATu{secrets.token_urlsafe(24)}"
        url = f"{self.base_url}{route}?{query}"
        with self._lock:
            self._downloads[route] = media.media_id
            self.download_urls.append(url)
        return {
            "messaging_product": "whatsapp",
            "url": url,
            "mime_type": media.mime_type,
            "sha256": media.sha256,
            "file_size": media.file_size,
            "id": media.media_id,
        }

    def _take_media_fault(self, media_id: str, kind: str) -> MediaFault | None:
        with self._lock:
            for fault in self.media_faults.get(media_id, []):
                if fault.on != kind or fault.times == 0:
                    continue
                if fault.times is not None:
                    fault.times -= 1
                return fault
        return None

    def _violation(self, text: str) -> None:
        with self._lock:
            self.violations.append(text)

    def handle(
        self, path: str, auth: str, raw: bytes
    ) -> tuple[int, dict[str, Any], float, Send | None]:
        """(status, JSON answer, delay, the accepted send if any) for one POST."""
        found = _MESSAGES_PATH.match(path)
        number = found.group(1) if found else ""
        with self._lock:
            token = self.numbers.get(number)
        if token is None:
            self._violation(f"unexpected path {path}")
            return 404, {"error": {"message": "Unknown path", "code": 100}}, 0.0, None
        if auth != f"Bearer {token}":
            self._violation(f"bad bearer token for {number}: {auth[:12]}…")
            return *_graph_error(190), None
        try:
            body = json.loads(raw)
        except ValueError:
            self._violation("body is not JSON")
            return *_graph_error(100), None
        with self._lock:
            self.requests.append(body)
            self.request_numbers.append(number)
        broken = validate(body)
        if broken:
            self._violation("; ".join(broken))
            return *_graph_error(100), None
        if "status" in body:
            with self._lock:
                self.reads.append(body)
                self.read_numbers.append(number)
            return 200, {"success": True}, 0.0, None
        with self._lock:
            fault = self._faults.popleft() if self._faults else Fault()
        return self._answer_send(body, number, fault)

    def _answer_send(
        self, body: dict[str, Any], number: str, fault: Fault
    ) -> tuple[int, dict[str, Any], float, Send | None]:
        """Keep the send if Meta takes it under `fault`, then answer as the fault says."""
        send = Send(f"wamid.GRAPH{uuid.uuid4().hex.upper()}", body, phone_number_id=number)
        kept = None
        if fault.takes_send:
            kept = send
            to = body.get("to")
            if isinstance(to, str) and _BSUID.match(to):
                # Meta accepts a BSUID in `to` and never delivers it (chatwoot/chatwoot#15150).
                self._violation("a BSUID in `to` is accepted and never delivered: use `recipient`")
                with self._lock:
                    self.undelivered.append(send)
                return 200, _accepted(body, send), 0.0, send
            with self._lock:
                self.sends.append(send)
        if fault.hold is not None:
            fault.hold.wait(30.0)  # this request's own server thread
        if fault.code is not None:
            return *_graph_error(fault.code, fault.title)[:2], fault.delay, kept
        if fault.status is not None:
            error = {"error": {"message": "Service unavailable"}}
            return fault.status, error, fault.delay, kept
        answer = _accepted(body, send)
        if fault.no_id:
            del answer["messages"]
        return 200, answer, fault.delay, kept

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

            def do_GET(self) -> None:
                status, headers, body = fake.handle_get(
                    self.path, self.headers.get("authorization", "")
                )
                try:
                    self.send_response(status)
                    for name, value in headers.items():
                        self.send_header(name, value)
                    self.end_headers()
                    for start in range(0, len(body), 64 * 1024):
                        self.wfile.write(body[start : start + 64 * 1024])
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client stopped reading (a too-large download)

            def log_message(self, *args: Any) -> None:
                pass

        self._server = LocalServer(Handler, ssl_context=self.tls)
        self.base_url = self._server.url
        return self.base_url

    def stop(self) -> None:
        """Stop serving."""
        if self._server is not None:
            self._server.stop()


def _accepted(body: dict[str, Any], send: Send) -> dict[str, Any]:
    """Meta's answer to an accepted send: the contact as addressed (`wa_id` for a number,
    `user_id` for a BSUID; https://dualhook.com/docs/contacts-bsuid-api-changes)."""
    to = body.get("to")
    if isinstance(to, str) and _WA_ID.match(to):
        contact = {"input": to, "wa_id": to}
    else:
        address = str(to or body.get("recipient"))
        contact = {"input": address, "user_id": address}
    return {
        "messaging_product": "whatsapp",
        "contacts": [contact],
        "messages": [{"id": send.outbound_id}],
    }


def _json_answer(status: int, payload: dict[str, Any]) -> tuple[int, dict[str, str], bytes]:
    data = json.dumps(payload).encode()
    return status, {"content-type": "application/json", "content-length": str(len(data))}, data


def _graph_error(code: int, text: str | None = None) -> tuple[int, dict[str, Any], float]:
    status, title = ERRORS[code]
    title = text or title
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
    found += _addressee_problems(body.get("to"), body.get("recipient"))
    kind = body.get("type")
    if kind not in ("text", "interactive", "template"):
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


def _addressee_problems(to: Any, recipient: Any) -> list[str]:
    """What is wrong with whom a message names: a WhatsApp id in `to` or a BSUID in
    `recipient` (https://dualhook.com/docs/contacts-bsuid-api-changes)."""
    if to is None and recipient is None:
        return ["a message needs `to` (a WhatsApp id) or `recipient` (a BSUID)"]
    found = []
    if to is not None and not (isinstance(to, str) and (_WA_ID.match(to) or _BSUID.match(to))):
        found.append("`to` must be a WhatsApp id (8-15 digits)")
    if recipient is not None and not (isinstance(recipient, str) and _BSUID.match(recipient)):
        found.append("`recipient` must be a business-scoped user id")
    if to is not None and recipient is not None:
        found.append("both `to` and `recipient`: Meta lets `to` win over the BSUID")
    return found


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
