"""record_view: what operators see of a record carries no phone number or name in clear."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from pyloto_corp.application.advance import Advancer
from pyloto_corp.application.inspect import record_view
from pyloto_corp.domain.records import HistoryEntry, Record
from tests.support.helpers import CONTACT_NAME, SENDER
from tests.unit.fakes import FakeQueue, FakeStore, MakeRecord, PutRecord

PERSONAL_TEXT = (
    f"Oi, aqui é {CONTACT_NAME.upper()}. Meu outro número é +55 (21) 99876-5432, "
    "e-mail maria.aparecida@exemplo.com.br, CPF 123.456.789-09."
)
LEAKS = [
    SENDER,
    SENDER[2:],  # without the country code
    CONTACT_NAME,
    "99876-5432",
    "maria.aparecida@exemplo.com.br",
    "123.456.789-09",
]


def dump(record: Record) -> str:
    """The view as the JSON an operator receives, non-ASCII kept so names can be searched."""
    return json.dumps(record_view(record), ensure_ascii=False)


def assert_no_personal_data(text: str) -> None:
    """None of the customer's identifiers appears, in any letter case."""
    lowered = text.lower()
    for leak in LEAKS:
        assert leak.lower() not in lowered, leak
    for part in CONTACT_NAME.split():
        assert part.lower() not in lowered, part


async def run_to_end(advancer: Advancer, queue: FakeQueue) -> None:
    """Run queued tasks until none is left."""
    while queue.tasks:
        task = queue.tasks.pop(0)
        await advancer.advance(task.message_id, task.state)


@pytest.mark.anyio
async def test_sent_record_view_has_no_phone_or_name(
    advancer: Advancer, store: FakeStore, queue: FakeQueue, put_record: PutRecord
) -> None:
    """A record run to `sent` (inbound text and reply body included) shows no personal data."""
    record = put_record(text=PERSONAL_TEXT)
    await advancer.advance(record.message_id, "received")
    await run_to_end(advancer, queue)
    sent = store.stored(record.message_id)
    assert sent.state == "sent"
    assert sent.reply is not None
    assert sent.reply["to"] == SENDER  # the stored record has it; the view must not
    text = dump(sent)
    assert_no_personal_data(text)
    view = record_view(sent)
    assert view["inbound"]["from"].endswith(SENDER[-4:])
    assert view["inbound"]["contact_name"] == "M**** A********"
    assert view["reply"]["to"].endswith(SENDER[-4:])
    assert "[name]" in view["inbound"]["text"]
    assert "[phone]" in view["inbound"]["text"]


@pytest.mark.anyio
async def test_history_entries_have_from_to_and_at(
    advancer: Advancer, store: FakeStore, queue: FakeQueue, put_record: PutRecord
) -> None:
    """Each history entry in the view says where the record came from, went, and when."""
    record = put_record()
    await advancer.advance(record.message_id, "received")
    await run_to_end(advancer, queue)
    history = record_view(store.stored(record.message_id))["history"]
    assert [(h["from"], h["to"]) for h in history] == [
        ("received", "deduped"),
        ("deduped", "fallback"),
        ("fallback", "queued_outbound"),
        ("queued_outbound", "sending"),
        ("sending", "sent"),
    ]
    assert all(isinstance(h["at"], float) for h in history)
    assert [h["trigger"] for h in history] == [
        "accept", "fall_back", "queue_reply", "claim_send", "send",
    ]  # fmt: skip


def test_reasons_quoting_personal_data_are_redacted(make_record: MakeRecord) -> None:
    """A failure reason built from an error that quotes the customer shows no personal data."""
    record = make_record(
        state="failed",
        failure_reason=(
            f"permanent: recipient {SENDER} ({CONTACT_NAME}) rejected; "
            "contact maria.aparecida@exemplo.com.br"
        ),
    )
    text = dump(record)
    assert_no_personal_data(text)
    assert record_view(record)["failure_reason"].startswith("permanent: recipient [phone]")


def test_view_of_a_message_without_text_or_name(make_record: MakeRecord) -> None:
    """A sticker with no contact name is shown with empty fields, not an error."""
    record = replace(make_record(kind="sticker", text=None), reply=None)
    record = replace(record, inbound=replace(record.inbound, contact_name=None))
    view = record_view(record)
    assert view["inbound"]["text"] is None
    assert view["inbound"]["contact_name"] is None
    assert view["reply"] is None
    assert view["failure_reason"] is None


def test_view_does_not_change_the_record(make_record: MakeRecord) -> None:
    """Masking works on a copy: the stored reply still has the real recipient."""
    reply = {"to": SENDER, "type": "text", "text": {"body": f"Olá {CONTACT_NAME}"}}
    record = make_record(state="queued_outbound", reply=reply)
    record.history.append(HistoryEntry("llm3", "queued_outbound", "queue_reply", 1.0, 0.5, 1))
    record_view(record)
    assert record.reply == {"to": SENDER, "type": "text", "text": {"body": f"Olá {CONTACT_NAME}"}}
