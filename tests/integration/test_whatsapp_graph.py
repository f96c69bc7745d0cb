"""The Graph API outbox against the fake Graph server and a real SQLite store: what each
failure means for at-most-once, and find_sent answered from recorded status webhooks."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from pyloto_corp.adapters.sqlite import SQLiteStore
from pyloto_corp.adapters.whatsapp_graph import GraphOutbox, create_client
from pyloto_corp.application.ports import AmbiguousSend, TransientStepError
from pyloto_corp.domain.records import StatusUpdate
from pyloto_corp.domain.replies import reply_key, text_reply_body
from tests.integration.conftest import terminal_states
from tests.integration.factories import record
from tests.support.fake_graph import PHONE_NUMBER_ID, TOKEN, VERSION, FakeGraph, Fault
from tests.support.redis_server import free_port

pytestmark = pytest.mark.anyio


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SQLiteStore]:
    """A real SQLite store."""
    opened = SQLiteStore(tmp_path / "graph.db", terminal_states())
    yield opened
    await opened.close()


def outbox_for(base_url: str, store: SQLiteStore, timeout: float = 2.0) -> GraphOutbox:
    """A Graph outbox on `base_url` with the test token."""
    return GraphOutbox({PHONE_NUMBER_ID: create_client(TOKEN, timeout)}, base_url, VERSION, store)


async def test_a_timeout_after_the_request_is_ambiguous(
    graph: FakeGraph, store: SQLiteStore
) -> None:
    """Graph accepted the request but answered too late: AmbiguousSend (keep the claim)."""
    graph.inject(Fault(delay=1.0))
    saved = record(state="queued_outbound")
    outbox = outbox_for(graph.base_url, store, timeout=0.3)
    body = text_reply_body(saved.inbound, "Olá!")
    try:
        with pytest.raises(AmbiguousSend):
            await outbox.send(body)
    finally:
        await outbox.close()
    assert len(graph.sends) == 1


async def test_no_connection_is_a_plain_transient_error(store: SQLiteStore) -> None:
    """Nothing listens: the request never left, so the claim may be released (not ambiguous)."""
    port = free_port()  # nothing listens there
    saved = record(state="queued_outbound")
    outbox = outbox_for(f"http://127.0.0.1:{port}", store)
    body = text_reply_body(saved.inbound, "Olá!")
    try:
        with pytest.raises(TransientStepError) as caught:
            await outbox.send(body)
    finally:
        await outbox.close()
    assert not isinstance(caught.value, AmbiguousSend)


async def test_find_sent_answers_from_a_status_echoing_the_record_id(
    graph: FakeGraph, store: SQLiteStore
) -> None:
    """No status yet: None. A status whose callback data is the record id: its outbound id."""
    saved = record(state="queued_outbound")
    await store.create_if_absent([saved])
    outbox = outbox_for(graph.base_url, store)
    try:
        assert await outbox.find_sent(saved.message_id) is None
        await store.record_status(
            StatusUpdate("wamid.OUT.LOST", "sent", 1, callback_data=reply_key(saved.message_id))
        )
        assert await outbox.find_sent(saved.message_id) == "wamid.OUT.LOST"
        assert await outbox.find_sent("wamid.UNKNOWN") is None
    finally:
        await outbox.close()
