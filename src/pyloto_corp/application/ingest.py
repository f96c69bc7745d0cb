"""ingest_webhook: verify the signature; store each parsed message once, queue its first step."""

from __future__ import annotations

import hashlib
import hmac
import logging
from collections.abc import Callable
from dataclasses import dataclass, replace

from opentelemetry import trace
from opentelemetry.trace import Link, Span

from pyloto_corp.application.advance import Advancer
from pyloto_corp.application.durability import DurabilityGate
from pyloto_corp.application.group_commit import GroupCommit
from pyloto_corp.application.llm_steps import conversation_id
from pyloto_corp.application.ports import IngestStore, StoreUnavailable
from pyloto_corp.domain.ops_metrics import pricing_category
from pyloto_corp.domain.privacy import message_ref
from pyloto_corp.domain.records import ParsedWebhook, Record, StatusUpdate
from pyloto_corp.observability.instruments import NEW_TRACE, Telemetry, traceparent_of

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


def trace_context(span: Span) -> dict[str, str]:
    """What a record keeps of its trace: the `traceparent` its tasks continue (none when
    tracing is off)."""
    traceparent = traceparent_of(span)
    return {"traceparent": traceparent} if traceparent else {}


class Ingestor:
    """Turns a verified, parsed webhook into durable records and their first tasks."""

    def __init__(
        self,
        store: IngestStore,
        advancer: Advancer,
        clock: Callable[[], float],
        telemetry: Telemetry | None = None,
        durability: DurabilityGate | None = None,
    ) -> None:
        """`durability`: asked before each webhook is stored (None: the store is always
        durable, as SQLite is)."""
        self.store = store
        self.durability = durability
        self.advancer = advancer
        self.clock = clock
        self.telemetry = telemetry or Telemetry()
        self._creates = GroupCommit(store)

    async def ingest(self, parsed: ParsedWebhook) -> IngestResult:
        """Store and queue every new message of a parsed webhook; record its statuses.

        A changed BSUID moves its customer first, durably (one atomic store call each), so
        the 200 is only answered once it is kept, and the messages of the same webhook,
        queued after it, already find the customer under the new id.
        """
        if self.durability is None:
            return await self._ingest(parsed)
        await self.durability.admit()
        try:
            return await self._ingest(parsed)
        except StoreUnavailable:
            self.durability.invalidate()
            raise

    async def _ingest(self, parsed: ParsedWebhook) -> IngestResult:
        await self._move_customers(parsed)
        now = self.clock()
        unique = {m.message_id: m for m in parsed.messages}  # a batch may repeat itself
        records = [Record.received(message, now) for message in unique.values()]
        spans: list[Span] = []
        if self.telemetry.tracing:
            spans = self._message_spans(records)
            records = [
                replace(record, trace_context=trace_context(span))
                for record, span in zip(records, spans, strict=True)
            ]
        try:
            # Shared with the webhooks that arrive with this one: one write, durable before
            # any of them is answered.
            created = await self._creates.create_if_absent(records)
            for index, (record, is_new) in enumerate(zip(records, created, strict=True)):
                if spans:
                    spans[index].set_attribute(
                        "pyloto.outcome", "created" if is_new else "duplicate"
                    )
                if is_new:
                    task = self.advancer.task_for(record)
                    assert task is not None
                    await self.advancer.queue.enqueue(task)
        finally:
            for span in spans:
                span.end()
        for status in parsed.statuses:
            await self.store.record_status(status)
            await self._count_billable(status, now)
        if parsed.errors:
            codes = [error.get("code") for error in parsed.errors]
            log.warning("webhook_errors", extra={"event": "webhook_errors", "codes": codes})
        result = IngestResult(
            created=sum(created),
            duplicates=len(parsed.messages) - sum(created),
            statuses=len(parsed.statuses),
            skipped=parsed.skipped,
        )
        metrics = self.telemetry.metrics
        metrics.messages.add(result.created)
        metrics.dedupe_hits.add(result.duplicates)
        if log.isEnabledFor(logging.DEBUG):  # counted by the metrics; a line only to debug
            counts = {f"{key}_count": value for key, value in result.__dict__.items()}
            log.debug("webhook_ingested", extra={"event": "webhook_ingested", **counts})
        return result

    async def _count_billable(self, status: StatusUpdate, now: float) -> None:
        """Count a billable message once, whichever of its statuses first says so (sent,
        delivered and read each repeat its pricing), in the UTC day Meta stamped it."""
        pricing = status.pricing
        if pricing is None or not pricing.billable:
            return
        at = float(status.timestamp) if status.timestamp > 0 else now
        if await self.store.count_billable(status.outbound_message_id, pricing.category, at):
            self.telemetry.metrics.billable_messages.add(
                1, {"pyloto.whatsapp.pricing_category": pricing_category(pricing.category)}
            )

    async def _move_customers(self, parsed: ParsedWebhook) -> None:
        """Each changed BSUID's memory (and alias) moves to the new one's key."""
        key = self.advancer.context.hash_key
        for change in parsed.user_id_changes:
            await self.store.move_customer(
                conversation_id(change.previous, key), conversation_id(change.current, key)
            )
        if parsed.user_id_changes:  # how many, never whose
            log.info(
                "customer_id_changed",
                extra={"event": "customer_id_changed", "count": len(parsed.user_id_changes)},
            )

    def _message_spans(self, records: list[Record]) -> list[Span]:
        """One span a message, whose trace the message's tasks continue: a child of the
        webhook's span when the webhook carried one message, else the root of a trace of its
        own (linked to the webhook's), so that every message has one trace."""
        webhook = trace.get_current_span().get_span_context()
        single = len(records) == 1
        links = [Link(webhook)] if webhook.is_valid and not single else []
        return [
            self.telemetry.start_span(
                "message received",
                parent=None if single else NEW_TRACE,
                links=links,
                attributes={
                    "pyloto.message.ref": message_ref(record.message_id),
                    "pyloto.message.kind": record.inbound.kind,
                    "pyloto.batch.size": len(records),
                    "enduser.id": record.inbound.bsuid or record.inbound.sender,  # hashed
                },
            )
            for record in records
        ]
