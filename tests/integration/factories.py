"""Builders of records and helpers to wait for them, shared by the integration tests."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace

import anyio

from pyloto_corp.application.ports import StateStore
from pyloto_corp.domain.records import HistoryEntry, Record
from pyloto_corp.domain.replies import text_reply_body
from pyloto_corp.domain.results import LLMCall, Results
from tests.support.records import inbound

# Non-ASCII text as customers write it: accents, emoji, CJK, a right-to-left script.
UNICODE_TEXT = "Olá! Preciso de orçamento — ação nº 5 😀 日本語 مرحبا"


def record(
    message_id: str | None = None,
    state: str = "received",
    created_at: float = 1_000.0,
    updated_at: float | None = None,
    text: str = "Olá, quero saber o preço",
) -> Record:
    """A record in `state`, created at `created_at`."""
    built = Record.received(inbound(message_id, text), created_at)
    return replace(built, state=state, updated_at=created_at if updated_at is None else updated_at)


def rich_record(message_id: str | None = None) -> Record:
    """A record with every field set, nested values and non-ASCII text."""
    message = replace(
        inbound(message_id, UNICODE_TEXT),
        context_message_id="wamid.CONTEXT",
        contact_name="José Conceição",
        details={"caption": "Ñandú ✓", "nested": {"list": [1, 2.5, "três"], "flag": True}},
    )
    return Record(
        message_id=message.message_id,
        inbound=message,
        state="queued_outbound",
        created_at=1_732_500_000.123456,
        updated_at=1_732_500_001.654321,
        version=4,
        results=Results(
            template="text",
            event="price",
            confidence=0.75,
            llm1=LLMCall(12.5, 100, 20, "gpt-4o-mini"),
            fallback_step="llm2",
            failed_call=LLMCall(10_000.0, 80, 0, "gpt-4o-mini", "gpt-4o-mini", "timeout"),
            repairs=["button title shortened to 20"],
            message={"type": "text", "text": {"body": "ã"}},
        ),
        reply=text_reply_body(message, "Olá! Já já respondemos 🙂"),
        fallback_reason="llm_disabled",
        failure_reason=None,
        outbound_message_id="wamid.OUT.1",
        send_started_at=1_732_500_001.5,
        send_claimed_by="instance-ç",
        attempts={"received": 1, "deduped": 2},
        history=[
            HistoryEntry("received", "deduped", "accept", 1_732_500_000.2, 1.25, 1),
            HistoryEntry("deduped", "fallback", "fall_back", 1_732_500_000.9, 0.5, 2),
        ],
        trace_context={"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"},
    )


def queued_record(message_id: str | None = None, created_at: float = 1_000.0) -> Record:
    """A record in `queued_outbound` carrying its Graph API reply body, as `queue_reply` left it."""
    built = record(message_id, state="queued_outbound", created_at=created_at)
    body = text_reply_body(built.inbound, "Olá! Recebemos sua mensagem.")
    return replace(built, reply=body, version=3)


async def wait_for_states(
    store: StateStore, message_ids: Iterable[str], states: set[str], within: float = 15.0
) -> dict[str, Record]:
    """Poll until every record is in one of `states`; fail after `within` seconds."""
    wanted = list(message_ids)
    found: dict[str, Record] = {}
    with anyio.fail_after(within):
        while True:
            for message_id in wanted:
                current = await store.get(message_id)
                if current is not None:
                    found[message_id] = current
            if len(found) == len(wanted) and all(r.state in states for r in found.values()):
                return found
            await anyio.sleep(0.01)
