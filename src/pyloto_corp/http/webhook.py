"""Meta's webhook: verification (GET) and delivery (POST), as one lean ASGI route.

Every webhook POST is a new message to store, so the route is the service's hot path. It is
answered without the general request machinery it does not use (request objects, parameter
injection, response classes, exception middleware): the raw body is read under the size
cap, the signature checked over it, the payload parsed and ingested, and the answer written
as two ASGI messages. Every outcome (200, 400, 401, 403, 413, 503, 500) is decided here,
counted by `pyloto.webhook.duration` and, when tracing is on, recorded as a server span.
"""

from __future__ import annotations

import hmac
import logging
import time
from urllib.parse import parse_qsl

import msgspec
from litestar import asgi
from litestar.types import HTTPResponseBodyEvent, HTTPResponseStartEvent, Receive, Scope, Send
from opentelemetry.trace import SpanKind, Status, StatusCode

from pyloto_corp.adapters.whatsapp_webhook import InvalidWebhook, parse_webhook
from pyloto_corp.application.ingest import BadSignature, MissingSignature, verify_signature
from pyloto_corp.application.ports import QueueUnavailable, StoreNotDurable, StoreUnavailable
from pyloto_corp.bootstrap import Container
from pyloto_corp.http.rejections import Rejections

log = logging.getLogger(__name__)

_JSON = [(b"content-type", b"application/json")]
_RETRY = [*_JSON, (b"retry-after", b"5")]
_SIGNATURE = b"x-hub-signature-256"
_LENGTH = b"content-length"


class _TooLarge(Exception):
    """The body is over the app's cap (413)."""


class _Answer:
    """A status, a body and its headers."""

    __slots__ = ("body", "headers", "status")

    def __init__(
        self, status: int, body: bytes, headers: list[tuple[bytes, bytes]] = _JSON
    ) -> None:
        self.status = status
        self.body = body
        self.headers = headers


def _error(status: int, detail: str, headers: list[tuple[bytes, bytes]] = _JSON) -> _Answer:
    return _Answer(status, msgspec.json.encode({"status_code": status, "detail": detail}), headers)


@asgi("/webhook", copy_scope=False)
async def webhook(scope: Scope, receive: Receive, send: Send) -> None:
    """GET verifies the subscription; POST stores every message once and acknowledges."""
    app = scope["litestar_app"]
    container: Container = app.state.container
    rejections: Rejections = app.state.rejections
    method = scope.get("method")  # an http scope: the route takes no websockets
    if method == "POST":
        await _delivery(container, rejections, scope, receive, send)
    elif method == "GET":
        await _answer(send, _verification(container, rejections, scope))
    else:
        allow = [*_JSON, (b"allow", b"GET, POST")]
        await _answer(send, _error(405, "method not allowed", allow))


def _verification(container: Container, rejections: Rejections, scope: Scope) -> _Answer:
    """The challenge when the verify token matches, else 403."""
    query = dict(parse_qsl(scope["query_string"].decode("latin-1"), keep_blank_values=True))
    mode, token = query.get("hub.mode"), query.get("hub.verify_token")
    challenge = query.get("hub.challenge")
    expected = container.settings.verify_token.encode()
    if (
        mode != "subscribe"
        or not token
        or challenge is None
        or not hmac.compare_digest(token.encode(), expected)
    ):
        rejections.note("verification_failed", 403)
        return _error(403, "verification failed")
    return _Answer(200, challenge.encode(), [(b"content-type", b"text/plain; charset=utf-8")])


async def _delivery(
    container: Container, rejections: Rejections, scope: Scope, receive: Receive, send: Send
) -> None:
    """One POST: answered, measured, and traced when tracing is on."""
    telemetry = container.telemetry
    started = time.perf_counter()
    status = 500  # unless an answer is written: the client went away mid-request
    try:
        if not telemetry.tracing:
            status = await _deliver(container, rejections, scope, receive, send)
            return
        attributes = {"http.request.method": "POST", "http.route": "/webhook"}
        with telemetry.span("POST /webhook", kind=SpanKind.SERVER, attributes=attributes) as span:
            try:
                status = await _deliver(container, rejections, scope, receive, send)
            finally:
                span.set_attribute("http.response.status_code", status)
                if status >= 500:
                    span.set_status(Status(StatusCode.ERROR, f"HTTP {status}"))
    finally:
        telemetry.metrics.webhook_duration.record(
            (time.perf_counter() - started) * 1000, {"http.response.status_code": status}
        )


async def _deliver(
    container: Container, rejections: Rejections, scope: Scope, receive: Receive, send: Send
) -> int:
    """Read, verify, parse and ingest; the status written (500 if the client left)."""
    limit = container.settings.app.webhook_max_body_bytes
    signature: str | None = None
    for name, value in scope["headers"]:
        if name == _SIGNATURE:
            signature = value.decode("latin-1")
        elif name == _LENGTH and value.isdigit() and int(value) > limit:
            rejections.note("too_large", 413)
            return await _answer(send, _error(413, "Request Entity Too Large"))
    try:
        body = await _body(receive, limit)
        if body is None:
            return 500
        verify_signature(body, signature, container.settings.app_secret)
        result = await container.ingestor.ingest(parse_webhook(body))
        answer = _Answer(200, msgspec.json.encode(result.__dict__))
    except Exception as error:  # every outcome gets its answer
        answer = _refusal(error, rejections)
    return await _answer(send, answer)


def _refusal(error: Exception, rejections: Rejections) -> _Answer:
    """The answer to a webhook that could not be taken, counted or logged as it deserves."""
    if isinstance(error, _TooLarge):
        rejections.note("too_large", 413)
        return _error(413, "Request Entity Too Large")
    if isinstance(error, MissingSignature):
        rejections.note("missing_signature", 401)
        return _error(401, "missing X-Hub-Signature-256")
    if isinstance(error, BadSignature):
        rejections.note("bad_signature", 403)
        return _error(403, "invalid X-Hub-Signature-256")
    if isinstance(error, InvalidWebhook):
        rejections.note("invalid_body", 400, str(error))
        return _error(400, str(error))
    if isinstance(error, StoreUnavailable | QueueUnavailable):
        # Every webhook of an outage is refused alike: counted in full, a few lines logged.
        if isinstance(error, StoreNotDurable):
            rejections.note("store_not_durable", 503, str(error), logging.ERROR)
            return _error(503, "storage not durable, retry later", _RETRY)
        reason = "store_unavailable" if isinstance(error, StoreUnavailable) else "queue_unavailable"
        rejections.note(reason, 503, str(error), logging.ERROR)
        return _error(503, "temporarily unavailable, retry later", _RETRY)
    log.error(
        "unhandled_error",
        exc_info=error,
        extra={"event": "unhandled_error", "route": "/webhook"},
    )
    return _error(500, "internal error")


async def _body(receive: Receive, limit: int) -> bytes | None:
    """The whole body (None if the client disconnected), refused past `limit` bytes."""
    message = await receive()
    if message["type"] != "http.request":
        return None
    body: bytes = message.get("body", b"")
    if not message.get("more_body", False) and len(body) <= limit:
        return body
    chunks = [body]
    size = len(body)
    while message.get("more_body", False):
        message = await receive()
        if message["type"] != "http.request":
            return None
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            break
        chunks.append(chunk)
    if size > limit:
        raise _TooLarge
    return b"".join(chunks)


async def _answer(send: Send, answer: _Answer) -> int:
    headers = [*answer.headers, (b"content-length", str(len(answer.body)).encode())]
    start: HTTPResponseStartEvent = {
        "type": "http.response.start",
        "status": answer.status,
        "headers": headers,
    }
    body: HTTPResponseBodyEvent = {
        "type": "http.response.body",
        "body": answer.body,
        "more_body": False,
    }
    await send(start)
    await send(body)
    return answer.status
