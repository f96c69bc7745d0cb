"""Graph API outbox: sends replies and read receipts to WhatsApp's Cloud API.

Both calls of a message go through `GraphClient`, a pooled keep-alive connection per host
(`http_pool`); bodies are encoded and answers decoded by msgspec.

Errors are told apart by Graph's `error.code`, not the HTTP status (Meta answers several
retryable codes with 400). Whether a request may have reached Meta decides what a failure
means for at-most-once: a connection that never opened sent nothing (retry at once); a
timeout or a dropped connection after the request went out is ambiguous (`AmbiguousSend`),
and so are a 2xx without a message id and an error that does not prove nothing was sent
(131000, any 5xx): the send step reconciles those through the status webhooks instead of
sending again, and domain/outcome.py decides whether it ever does. Only a refusal by a
rate-limit code (or a 429) proves the request was turned away.
"""

from __future__ import annotations

import logging
import ssl
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

import msgspec
from opentelemetry.trace import SpanKind

from pyloto_corp.adapters.http_pool import (
    Answer,
    ConnectFailed,
    HttpPool,
    Origin,
    ResponseFailed,
    default_ssl_context,
)
from pyloto_corp.application.ports import (
    AmbiguousSend,
    PermanentStepError,
    StateStore,
    TransientStepError,
)
from pyloto_corp.domain.outcome import GRAPH_ERROR, NO_ANSWER, NO_MESSAGE_ID
from pyloto_corp.domain.privacy import redact_text
from pyloto_corp.observability.instruments import Telemetry, mark_failed

log = logging.getLogger(__name__)

# Retry later: throughput (130429), pair rate (131056), rate limits (80007, 4), transient (131000).
TRANSIENT_CODES = frozenset({130429, 131056, 80007, 4, 131000})
# "Something went wrong", an error Meta does not explain
# (https://developers.facebook.com/documentation/business-messaging/whatsapp/support/error-codes):
# Graph may have sent the message before failing (a `sent` status for it can arrive before
# this answer), so for a send it is no proof that nothing left.
UNKNOWN_OUTCOME_CODES = frozenset({131000})
# No retry can help: outside the 24-hour window, undeliverable, unsupported, invalid parameter.
PERMANENT_CODES = frozenset({131047, 131026, 131051, 100})
TOKEN_EXPIRED = 190
# A reply to a BSUID (`recipient`) of a kind Meta cannot address to one (some authentication
# templates): permanent, with a reason of its own so operators tell it from an undeliverable
# number. https://dualhook.com/docs/contacts-bsuid-api-changes (Meta's error code list for
# business-scoped user ids).
BSUID_UNSUPPORTED = 131062
BSUID_UNSUPPORTED_REASON = "bsuid_recipient_unsupported"

# Meta's status webhooks usually arrive within seconds; this long without one carrying our
# callback data, a send whose outcome is unknown stays unknown (domain/outcome.py decides).
DEFAULT_RECONCILE_SECONDS = 120.0


# Connections to Graph at most open at once.
MAX_CONNECTIONS = 20


def create_client(access_token: str, timeout_seconds: float) -> GraphClient:
    """A pooled client with the bearer token and bounded timeouts (built in bootstrap)."""
    return GraphClient(access_token, timeout_seconds)


class GraphClient:
    """JSON POSTs to the Graph API with the bearer token: one pool per host, the request
    head of each URL built once."""

    def __init__(
        self,
        access_token: str,
        timeout_seconds: float,
        max_connections: int = MAX_CONNECTIONS,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.timeout = timeout_seconds
        self.connect_timeout = min(timeout_seconds, 5.0)
        self.max_connections = max_connections
        # Built once, when bootstrap builds the client: an unreadable SSL_CERT_FILE stops the
        # start instead of failing each call.
        self.ssl_context = ssl_context or default_ssl_context()
        self._token = access_token
        self._pools: dict[Origin, HttpPool] = {}
        self._heads: dict[str, tuple[HttpPool, bytes]] = {}

    async def post(self, url: str, body: bytes) -> Answer:
        """POST `body` (JSON) to `url`; ConnectFailed if it was not sent, ResponseFailed if
        it was and no complete answer came back."""
        found = self._heads.get(url) or self._prepare(url)
        pool, head = found
        return await pool.request(head + b"%d\r\n\r\n" % len(body), body)

    async def aclose(self) -> None:
        """Close every connection."""
        for pool in self._pools.values():
            await pool.aclose()

    def _prepare(self, url: str) -> tuple[HttpPool, bytes]:
        origin = Origin.of(url)
        pool = self._pools.get(origin)
        if pool is None:
            pool = self._pools[origin] = HttpPool(
                origin,
                connect_timeout=self.connect_timeout,
                read_timeout=self.timeout,
                max_connections=self.max_connections,
                ssl_context=self.ssl_context,
            )
        parts = urlsplit(url)
        target = parts.path or "/"
        if parts.query:
            target += f"?{parts.query}"
        head = (
            f"POST {target} HTTP/1.1\r\nhost: {origin.host_header}\r\n"
            f"authorization: Bearer {self._token}\r\n"
            "content-type: application/json\r\naccept: application/json\r\n"
            "user-agent: pyloto\r\ncontent-length: "
        ).encode("latin-1")
        self._heads[url] = (pool, head)
        return pool, head


def messages_url(base_url: str, version: str, phone_number_id: str) -> str:
    """The messages endpoint of one business number."""
    return f"{base_url.rstrip('/')}/{version}/{phone_number_id}/messages"


class GraphOutbox:
    """Outbox on the Graph API messages endpoints of the business numbers.

    `clients` holds, by phone number id, the client (with that number's token) that sends
    from it; the first is the default number, which answers a request naming none. A request
    for any other number is refused before anything is sent.

    `find_sent` cannot ask Meta (it has no lookup by callback data): it answers from the
    delivery statuses already recorded, as status webhooks echo `biz_opaque_callback_data`
    (the record's id). Hence `reconcile_seconds` > 0: the send step waits that long for one.
    """

    def __init__(
        self,
        clients: Mapping[str, GraphClient],
        base_url: str,
        version: str,
        store: StateStore,
        *,
        typing_indicator: bool = True,
        reconcile_seconds: float = DEFAULT_RECONCILE_SECONDS,
        telemetry: Telemetry | None = None,
    ) -> None:
        if not clients:
            raise ValueError("the Graph outbox needs at least one business number")
        self.telemetry = telemetry or Telemetry()
        self.clients = dict(clients)
        self.default_number = next(iter(self.clients))
        self.urls = {number: messages_url(base_url, version, number) for number in clients}
        self.store = store
        self.typing_indicator = typing_indicator
        self.reconcile_seconds = reconcile_seconds
        self.host = urlsplit(base_url).hostname or ""

    async def send(self, body: dict[str, Any], phone_number_id: str = "") -> str:
        """POST the message from the business number; its outbound wamid."""
        payload = await self._post(body, "send", phone_number_id)
        try:
            return str(payload["messages"][0]["id"])
        except (KeyError, IndexError, TypeError):
            # Meta answered 2xx without an id: it may well have sent the message.
            raise AmbiguousSend("graph: accepted without a message id", why=NO_MESSAGE_ID) from None

    async def find_sent(self, message_id: str) -> str | None:
        """The outbound id of a delivery status that echoed this record's reply key, if any
        arrived (the store joins statuses to records by that key)."""
        record = await self.store.get(message_id)
        if record is None or record.delivery_status is None:
            return None
        return record.delivery_outbound_id or record.outbound_message_id

    async def mark_read(self, message_id: str, phone_number_id: str = "") -> None:
        """Mark the inbound message read through the number it was written to (with a
        typing indicator when enabled)."""
        body: dict[str, Any] = {
            "messaging_product": "whatsapp",
            "status": "read",
            "message_id": message_id,
        }
        if self.typing_indicator:
            body["typing_indicator"] = {"type": "text"}
        await self._post(body, "mark_read", phone_number_id)

    async def close(self) -> None:
        """Close the connection pools (numbers sharing a token share one client)."""
        for client in {id(client): client for client in self.clients.values()}.values():
            await client.aclose()

    async def _post(
        self, body: dict[str, Any], operation: str, phone_number_id: str
    ) -> dict[str, Any]:
        """One Graph call as a span: the operation, the HTTP status and Graph's error code."""
        number = phone_number_id or self.default_number
        client = self.clients.get(number)
        if client is None:
            # Never sent from another number: the customer wrote to one this app is not set
            # up to send from. (The id is left out: it is a string of digits, as a phone is.)
            raise PermanentStepError("graph: not a configured business number")
        attributes = {"pyloto.whatsapp.operation": operation, "server.address": self.host}
        with self.telemetry.span(
            f"whatsapp {operation}", kind=SpanKind.CLIENT, attributes=attributes
        ) as span:
            try:
                answer = await client.post(self.urls[number], _encode(body))
            except ConnectFailed as error:
                # No connection was made: the request never left this process.
                raise TransientStepError(f"graph: not sent: {error}") from error
            except ResponseFailed as error:
                raise AmbiguousSend(f"graph: no answer: {error}", why=NO_ANSWER) from error
            status = answer.status
            span.set_attribute("http.response.status_code", status)
            try:
                payload = _decode(answer.body)
            except msgspec.DecodeError:
                payload = None
            if not isinstance(payload, dict):
                payload = {}
            if 200 <= status < 300 and "error" not in payload:
                return payload
            code = _graph_code(payload)
            label = str(code) if code is not None else f"http_{status}"
            span.set_attribute("pyloto.whatsapp.error_code", label)
            mark_failed(span, label)
            if operation == "send":
                self.telemetry.metrics.send_errors.add(1, {"pyloto.whatsapp.error_code": label})
            raise _error(status, payload)


_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder().decode


def _graph_code(payload: dict[str, Any]) -> Any:
    error = payload.get("error")
    return error.get("code") if isinstance(error, dict) else None


def _error(status: int, payload: dict[str, Any]) -> Exception:
    """The step error for a Graph error answer, by its code first, its HTTP status second."""
    error = payload.get("error")
    details = error if isinstance(error, dict) else {}
    code = details.get("code")
    # Graph's text may quote the customer (their number, BSUID, a wamid): redacted here, where
    # it enters pyloto, so no log line, record or page gets it; redacted before it is cut, so
    # a number at the cut is not left half in clear.
    title = redact_text(str(details.get("error_user_title") or details.get("message") or ""))
    title = title[:200]
    described = f"graph error {code}: {title}" if code is not None else f"graph http {status}"
    if code == TOKEN_EXPIRED:
        log.error(
            "whatsapp_token_expired",
            extra={"event": "whatsapp_token_expired", "code": code, "http_status": status},
        )
        return PermanentStepError(f"{described} (WHATSAPP_ACCESS_TOKEN expired or revoked)")
    if code == BSUID_UNSUPPORTED:
        return PermanentStepError(f"{BSUID_UNSUPPORTED_REASON}: {described}")
    if code in PERMANENT_CODES:
        return PermanentStepError(described)
    if code in UNKNOWN_OUTCOME_CODES or (code not in TRANSIENT_CODES and status >= 500):
        return AmbiguousSend(described, why=GRAPH_ERROR)
    if code in TRANSIENT_CODES or status == 429:
        return TransientStepError(described)
    return PermanentStepError(described)
