"""The dry-run outbox records the exact request bodies it would have sent, durably."""

from __future__ import annotations

import json
import re
import sqlite3
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


async def test_each_request_keeps_the_business_number_it_would_have_gone_from(
    tmp_path: Path,
) -> None:
    """The number named by the send is kept; a send naming none is the default number's."""
    opened = DryRunOutbox(tmp_path / "numbers.db", default_number="106540352242922")
    try:
        await opened.send(body("cb-numbers"), "106540352242933")
        await opened.send(body("cb-numbers"))
        assert await opened.sent_numbers("cb-numbers") == ["106540352242933", "106540352242922"]
        assert await opened.sent_numbers("cb-unknown") == []
    finally:
        await opened.close()


async def test_a_file_from_before_numbers_were_kept_is_brought_up_to_date(tmp_path: Path) -> None:
    """An outbox table written without the number column gains it; what it held stays, as
    sent from the default number ('')."""
    path = tmp_path / "old.db"
    old_body = body("cb-old")
    with sqlite3.connect(path) as connection:
        connection.executescript(
            "CREATE TABLE dry_run_outbox (seq INTEGER PRIMARY KEY AUTOINCREMENT,"
            " outbound_message_id TEXT NOT NULL UNIQUE, callback_data TEXT, body TEXT NOT NULL,"
            " created_at REAL NOT NULL DEFAULT 0);"
        )
        connection.execute(
            "INSERT INTO dry_run_outbox (outbound_message_id, callback_data, body)"
            " VALUES ('wamid.dryrun.old', ?, ?)",
            (old_body["biz_opaque_callback_data"], json.dumps(old_body)),
        )
    connection.close()
    reopened = DryRunOutbox(path)
    try:
        assert await reopened.sent() == [old_body]
        assert await reopened.sent_numbers("cb-old") == [""]
        await reopened.send(body("cb-new"), "106540352242933")
        assert await reopened.sent_numbers("cb-new") == ["106540352242933"]
    finally:
        await reopened.close()
