"""Advancer + real SQLite store + real local queue + dry-run outbox, wired by bootstrap (no HTTP).

Fake outboxes here implement the project's own Outbox port to inject send failures.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from pyloto_corp.adapters.dry_run_outbox import DryRunOutbox
from pyloto_corp.adapters.sqlite import SQLiteStore
from pyloto_corp.adapters.whatsapp_webhook import parse_webhook
from pyloto_corp.application.ingest import verify_signature
from pyloto_corp.application.ports import Outbox, PermanentStepError, TransientStepError
from pyloto_corp.bootstrap import Container, bootstrap, queue_specs
from pyloto_corp.config import Settings
from pyloto_corp.domain.records import Record
from pyloto_corp.domain.replies import reply_key
from tests.integration.conftest import terminal_states
from tests.integration.factories import queued_record, record, wait_for_states
from tests.support.helpers import (
    APP_SECRET,
    SENDER,
    encode,
    envelope,
    eventually,
    signature,
    status,
    text_message,
)

pytestmark = pytest.mark.anyio

FULL_PATH = ["received", "deduped", "fallback", "queued_outbound", "sending", "sent"]


class FlakyOutbox:
    """Outbox port that fails the first `failures` sends (forever with None), then accepts."""

    reconcile_seconds = 0.0

    def __init__(self, failures: int | None, error: type[Exception] = TransientStepError) -> None:
        self.failures = failures
        self.error = error
        self.calls = 0
        self.accepted: list[tuple[str, dict[str, Any]]] = []

    async def send(self, body: dict[str, Any], phone_number_id: str = "") -> str:
        self.calls += 1
        if self.failures is None or self.calls <= self.failures:
            raise self.error(f"Graph API 503 on call {self.calls}")
        outbound_id = f"wamid.FAKE{uuid.uuid4().hex}"
        self.accepted.append((outbound_id, body))
        return outbound_id

    async def mark_read(self, message_id: str, phone_number_id: str = "") -> None:
        return None

    async def find_sent(self, message_id: str) -> str | None:
        for outbound_id, body in self.accepted:
            if body.get("biz_opaque_callback_data") == reply_key(message_id):
                return outbound_id
        return None


class HangingOutbox:
    """Outbox port whose sends never complete (a process dying mid-send); nothing is sent."""

    reconcile_seconds = 0.0

    def __init__(self) -> None:
        self.calls: list[str] = []

    async def send(self, body: dict[str, Any], phone_number_id: str = "") -> str:
        self.calls.append(str(body["biz_opaque_callback_data"]))
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    async def find_sent(self, message_id: str) -> str | None:
        return None

    async def mark_read(self, message_id: str, phone_number_id: str = "") -> None:
        return None


@asynccontextmanager
async def started(settings: Settings, outbox: Outbox | None = None) -> AsyncIterator[Container]:
    """A started container on `settings`, always stopped afterwards."""
    container = bootstrap(settings, outbox=outbox)
    await container.start()
    try:
        yield container
    finally:
        await container.stop()


def signed_body(*texts: str) -> tuple[bytes, list[str]]:
    """A webhook body with one text message per text (signature checked), and their ids."""
    messages = [text_message(text) for text in texts]
    body = encode(envelope(messages))
    verify_signature(body, signature(body), APP_SECRET)
    return body, [str(m["id"]) for m in messages]


def path_of(item: Record) -> list[str]:
    """The states a record went through, from its history."""
    return [item.history[0].source, *(entry.dest for entry in item.history)]


async def dry_run_rows(path: Path, message_id: str | None = None) -> list[dict[str, Any]]:
    """Requests recorded by the dry-run outbox on `path` (read after containers stopped)."""
    outbox = DryRunOutbox(path)
    try:
        return await outbox.sent(message_id)
    finally:
        await outbox.close()


async def finished(container: Container, message_id: str, settle: float) -> Record:
    """The record once it is `sent` or `failed`, read after `settle` more seconds in which a
    retry or second send that should not happen would have shown up."""
    done = await wait_for_states(container.store, [message_id], {"sent", "failed"})
    await asyncio.sleep(settle)
    return done[message_id]


async def store_before_start(settings: Settings, records: list[Record]) -> None:
    """Put `records` in the SQLite file of `settings`, as a process that died left them."""
    store = SQLiteStore(settings.state.sqlite_path, terminal_states())
    try:
        assert await store.create_if_absent(records) == [True] * len(records)
    finally:
        await store.close()


async def sent_once_each(settings: Settings, done: dict[str, Record]) -> dict[str, dict[str, Any]]:
    """Check that every record in `done` ended `sent` with exactly one request in the dry-run
    outbox, and that the outbox holds no other; each record's request, by message id."""
    assert {r.state for r in done.values()} == {"sent"}
    sent: dict[str, dict[str, Any]] = {}
    for message_id in done:
        rows = await dry_run_rows(settings.state.sqlite_path, message_id)
        assert len(rows) == 1, message_id
        sent[message_id] = rows[0]
    assert len(await dry_run_rows(settings.state.sqlite_path)) == len(done)
    return sent


async def test_ingested_message_reaches_sent(make_settings: Callable[..., Settings]) -> None:
    """A signed webhook ingested directly ends in `sent` with one recorded reply and its status."""
    settings = make_settings()
    body, (message_id,) = signed_body("Olá, vocês abrem sábado?")

    async with started(settings) as container:
        result = await container.ingestor.ingest(parse_webhook(body))
        assert (result.created, result.duplicates) == (1, 0)
        done = (await wait_for_states(container.store, [message_id], {"sent"}))[message_id]
        assert await container.ingestor.ingest(parse_webhook(body)) == replace(
            result, created=0, duplicates=1
        )

        assert done.outbound_message_id is not None
        assert path_of(done) == FULL_PATH
        assert done.fallback_reason == "llm_disabled"
        assert await container.outbox.find_sent(message_id) == done.outbound_message_id

        receipt = encode(envelope(statuses=[status(done.outbound_message_id, "delivered", 1)]))
        await container.ingestor.ingest(parse_webhook(receipt))
        delivered = await container.store.get(message_id)
        assert delivered is not None
        assert delivered.delivery_status == "delivered"

    rows = await dry_run_rows(settings.state.sqlite_path)
    assert rows == [done.reply]
    assert rows[0]["to"] == SENDER
    assert rows[0]["context"] == {"message_id": message_id}
    assert rows[0]["biz_opaque_callback_data"] == reply_key(message_id)


async def test_transient_send_failures_are_retried_and_sent_once(
    make_settings: Callable[..., Settings],
) -> None:
    """An outbox failing three times is retried by the queue; the reply is accepted exactly once."""
    outbox = FlakyOutbox(failures=3)
    body, (message_id,) = signed_body("Qual o horário de atendimento?")

    async with started(make_settings(), outbox) as container:
        await container.ingestor.ingest(parse_webhook(body))
        # 0.2 s is several max backoffs: an extra retry would show up
        done = await finished(container, message_id, 0.2)

    assert done.state == "sent"
    assert outbox.calls == 4
    assert len(outbox.accepted) == 1
    assert done.outbound_message_id == outbox.accepted[0][0]
    assert outbox.accepted[0][1] == done.reply
    assert done.attempts["queued_outbound"] == 4


async def test_outbox_failing_forever_ends_failed_with_nothing_sent(
    make_settings: Callable[..., Settings],
) -> None:
    """Out of send attempts the record is `failed`, its reason names the attempts, nothing sent."""
    settings = make_settings()
    max_attempts = queue_specs(settings)["outbound"].max_attempts
    outbox = FlakyOutbox(failures=None)
    body, (message_id,) = signed_body("Alguém aí?")

    async with started(settings, outbox) as container:
        await container.ingestor.ingest(parse_webhook(body))
        done = await finished(container, message_id, 0.2)

    assert done.state == "failed"
    assert done.failure_reason is not None
    assert f"out of attempts ({max_attempts})" in done.failure_reason
    assert "Graph API 503" in done.failure_reason
    assert outbox.calls == max_attempts
    assert outbox.accepted == []
    assert done.outbound_message_id is None
    assert path_of(done)[-2:] == ["queued_outbound", "failed"]
    assert await dry_run_rows(settings.state.sqlite_path) == []


async def test_permanent_send_failure_fails_without_retry(
    make_settings: Callable[..., Settings],
) -> None:
    """A permanent outbox error dead-letters the record after one attempt, with its reason."""
    outbox = FlakyOutbox(failures=None, error=PermanentStepError)
    body, (message_id,) = signed_body("Número inválido")

    async with started(make_settings(), outbox) as container:
        await container.ingestor.ingest(parse_webhook(body))
        done = await finished(container, message_id, 0.2)

    assert done.state == "failed"
    assert done.failure_reason is not None
    assert done.failure_reason.startswith("permanent")
    assert outbox.calls == 1
    assert outbox.accepted == []


async def test_concurrent_duplicate_send_tasks_send_once(
    make_settings: Callable[..., Settings],
) -> None:
    """Five copies of the send task at once and a late redelivery produce one outbox row."""
    settings = make_settings()
    async with started(settings) as container:
        queued = queued_record(created_at=time.time())
        assert await container.store.create_if_absent([queued]) == [True]

        outcomes = await asyncio.gather(
            *(container.advancer.advance(queued.message_id, "queued_outbound") for _ in range(5)),
            return_exceptions=True,
        )
        assert outcomes.count("sent") == 1, outcomes
        assert all(o in ("sent", "stale") or isinstance(o, TransientStepError) for o in outcomes)
        assert await container.advancer.advance(queued.message_id, "queued_outbound") == "stale"
        done = await container.store.get(queued.message_id)

    assert done is not None
    assert done.state == "sent"
    assert await dry_run_rows(settings.state.sqlite_path, queued.message_id) == [queued.reply]


async def test_restart_finishes_records_interrupted_mid_send(
    make_settings: Callable[..., Settings],
) -> None:
    """Records whose sends hung when the container stopped are each sent once by the next one."""
    settings = make_settings()
    hanging = HangingOutbox()
    body, message_ids = signed_body(*(f"Mensagem {n}" for n in range(5)))

    async with started(settings, hanging) as first:
        await first.ingestor.ingest(parse_webhook(body))
        await wait_for_states(first.store, message_ids, {"sending"})
        await eventually(lambda: len(hanging.calls) == len(message_ids))
        interrupted = [await first.store.get(m) for m in message_ids]
    assert all(r is not None and r.send_started_at is not None for r in interrupted)

    async with started(settings) as second:
        done = await wait_for_states(second.store, message_ids, {"sent", "failed"})

    assert set(done) == set(message_ids)
    for message_id, request in (await sent_once_each(settings, done)).items():
        assert request == done[message_id].reply


async def test_restart_finishes_records_left_in_every_open_state(
    make_settings: Callable[..., Settings],
) -> None:
    """Records stored in received/deduped/fallback/queued_outbound all reach `sent` after start."""
    settings = make_settings()
    now = time.time()
    left = [
        record(state="received", created_at=now),
        record(state="deduped", created_at=now),
        record(state="fallback", created_at=now),
        queued_record(created_at=now),
        replace(queued_record(created_at=now), send_started_at=now, send_claimed_by="crashed"),
    ]
    await store_before_start(settings, left)

    ids = [r.message_id for r in left]
    async with started(settings) as container:
        done = await wait_for_states(container.store, ids, {"sent", "failed"})
        await asyncio.sleep(0.1)  # a duplicate send would land now

    assert set(done) == set(ids)
    await sent_once_each(settings, done)


async def test_crash_after_send_is_reconciled_without_a_second_send(
    make_settings: Callable[..., Settings],
) -> None:
    """A claimed send whose reply is already in the outbox ends `sent` with that id, unsent."""
    settings = make_settings()
    now = time.time()
    claimed = replace(
        queued_record(created_at=now), send_started_at=now, send_claimed_by="crashed-instance"
    )
    await store_before_start(settings, [claimed])
    assert claimed.reply is not None
    outbox = DryRunOutbox(settings.state.sqlite_path)
    try:
        earlier_id = await outbox.send(claimed.reply)
    finally:
        await outbox.close()

    async with started(settings) as container:
        done = await finished(container, claimed.message_id, 0.1)

    assert done.state == "sent"
    assert done.outbound_message_id == earlier_id
    assert await dry_run_rows(settings.state.sqlite_path) == [claimed.reply]
