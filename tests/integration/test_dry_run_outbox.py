"""The dry-run outbox records the exact request bodies it would have sent, durably."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from pyloto_corp.adapters.dry_run_outbox import DryRunOutbox
from pyloto_corp.domain.replies import text_reply_body
from tests.integration.factories import UNICODE_TEXT
from tests.support.records import inbound

pytestmark = pytest.mark.anyio

WAMID = re.compile(r"^wamid\.[A-Za-z0-9._-]+$")


def body(callback: str, text: str = UNICODE_TEXT) -> dict[str, Any]:
    """A Graph API text reply to the inbound message `callback` (its reply key as callback)."""
    return text_reply_body(inbound(callback, text="oi"), text)


@pytest.fixture
async def outbox(tmp_path: Path) -> AsyncIterator[DryRunOutbox]:
    """A dry-run outbox on a private file."""
    opened = DryRunOutbox(tmp_path / "outbox.db")
    yield opened
    await opened.close()


async def test_send_returns_distinct_wamid_like_ids(outbox: DryRunOutbox) -> None:
    """Every send returns a new id shaped like a WhatsApp message id."""
    ids = [await outbox.send(body(f"cb-{n}")) for n in range(20)]
    assert len(set(ids)) == 20
    assert all(WAMID.match(i) for i in ids), ids


async def test_send_records_the_exact_body(outbox: DryRunOutbox) -> None:
    """The recorded request equals the body given, non-ASCII text and nesting included."""
    first, second = body("cb-1"), body("cb-2", text="Segunda resposta — ✓")
    first["context"]["extra"] = {"lista": [1, "dois", None, 3.5]}

    await outbox.send(first)
    await outbox.send(second)

    assert await outbox.sent() == [first, second]
    assert await outbox.sent(message_id="cb-2") == [second]
    assert await outbox.sent(message_id="cb-unknown") == []


async def test_find_sent_by_callback_data(outbox: DryRunOutbox) -> None:
    """find_sent returns the id of the send that carried the callback data; None otherwise."""
    mine = await outbox.send(body("wamid.INBOUND.1"))
    other = await outbox.send(body("wamid.INBOUND.2"))

    assert await outbox.find_sent("wamid.INBOUND.1") == mine
    assert await outbox.find_sent("wamid.INBOUND.2") == other
    assert await outbox.find_sent("wamid.INBOUND.3") is None


async def test_find_sent_returns_the_first_of_repeated_sends(outbox: DryRunOutbox) -> None:
    """With two sends for one callback, find_sent names the earliest (the one that counted)."""
    first = await outbox.send(body("cb-twice"))
    await outbox.send(body("cb-twice"))
    assert await outbox.find_sent("cb-twice") == first


async def test_outbox_survives_reopening(tmp_path: Path) -> None:
    """A new outbox on the same file sees earlier sends, finds them, and keeps appending."""
    path = tmp_path / "shared.db"
    first = DryRunOutbox(path)
    sent_body = body("cb-durable")
    try:
        sent_id = await first.send(sent_body)
    finally:
        await first.close()

    second = DryRunOutbox(path)
    try:
        assert await second.sent() == [sent_body]
        assert await second.find_sent("cb-durable") == sent_id
        later = body("cb-later")
        await second.send(later)
        assert await second.sent() == [sent_body, later]
    finally:
        await second.close()
