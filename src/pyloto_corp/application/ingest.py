"""ingest_webhook: verify, parse, store each message once, queue its first step."""

from __future__ import annotations

import hashlib
import hmac
import logging
from collections.abc import Callable
from dataclasses import dataclass

from pyloto_corp.adapters.whatsapp_webhook import parse_webhook
from pyloto_corp.application.advance import Advancer
from pyloto_corp.application.ports import StateStore
from pyloto_corp.domain.records import Record

log = logging.getLogger(__name__)


class MissingSignature(Exception):
    """The X-Hub-Signature-256 header is absent (401)."""


class BadSignature(Exception):
    """The signature does not match the raw body (403)."""


def verify_signature(body: bytes, header: str | None, secret: str) -> None:
    """Check `sha256=<hex>` over the raw bytes, in constant time."""
    if not header:
        raise MissingSignature
    scheme, _, given = header.partition("=")
    expected = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    if scheme.strip().lower() != "sha256" or not hmac.compare_digest(
        given.strip().lower().encode(), expected.encode()
    ):
        raise BadSignature


def sign(body: bytes, secret: str) -> str:
    """The X-Hub-Signature-256 value Meta would send for `body`."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


@dataclass(frozen=True)
class IngestResult:
    """Counts of what one webhook POST carried."""

    created: int
    duplicates: int
    statuses: int
    skipped: int


class Ingestor:
    """Turns a verified webhook body into durable records and their first tasks."""

    def __init__(self, store: StateStore, advancer: Advancer, clock: Callable[[], float]) -> None:
        self.store = store
        self.advancer = advancer
        self.clock = clock

    async def ingest(self, body: bytes) -> IngestResult:
        """Store and queue every new message; record statuses. Raises InvalidWebhook."""
        parsed = parse_webhook(body)
        now = self.clock()
        unique = {m.message_id: m for m in parsed.messages}  # a batch may repeat itself
        records = [Record.received(message, now) for message in unique.values()]
        created = await self.store.create_if_absent(records) if records else []
        for record, is_new in zip(records, created, strict=True):
            if is_new:
                task = self.advancer.task_for(record)
                assert task is not None
                await self.advancer.queue.enqueue(task)
        for status in parsed.statuses:
            await self.store.record_status(status)
        if parsed.errors:
            codes = [error.get("code") for error in parsed.errors]
            log.warning("webhook_errors", extra={"event": "webhook_errors", "codes": codes})
        result = IngestResult(
            created=sum(created),
            duplicates=len(parsed.messages) - sum(created),
            statuses=len(parsed.statuses),
            skipped=parsed.skipped,
        )
        counts = {f"{key}_count": value for key, value in result.__dict__.items()}
        log.info("webhook_ingested", extra={"event": "webhook_ingested", **counts})
        return result
