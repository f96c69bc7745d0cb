"""POST /webhook with real message payloads: kinds, batches, duplicates and concurrency."""

from __future__ import annotations

import asyncio
import copy
from pathlib import Path

import pytest

from pyloto_corp.domain.records import InboundMessage
from tests.e2e.conftest import OpenPyloto
from tests.e2e.support import FALLBACK_PATH, Pyloto, message_ids, trajectory
from tests.support.helpers import encode, envelope, load_payload, shipped_templates, text_message

pytestmark = pytest.mark.anyio

UNSUPPORTED_REPLY = shipped_templates().for_message(
    InboundMessage("wamid.X", "1", "unsupported", 0)
)[1]


async def test_unknown_message_type_is_answered_with_the_unsupported_template(
    pyloto: Pyloto,
) -> None:
    """A type the service does not know → 200, parsed as `unsupported`, and sent the template."""
    payload = load_payload("batches/unknown_type.json")
    [message_id] = message_ids(payload)
    response = await pyloto.post(payload)
    assert response.status_code == 200
    assert response.json()["created"] == 1
    view = await pyloto.wait_for(message_id)
    assert view["state"] == "sent"
    assert view["inbound"]["kind"] == "unsupported"
    assert view["results"]["template"] == "unsupported"
    assert view["reply"]["text"]["body"] == UNSUPPORTED_REPLY
    [sent] = await pyloto.sent_for(message_id)
    assert sent["text"]["body"] == UNSUPPORTED_REPLY
    assert sent["context"] == {"message_id": message_id}


async def test_a_welcome_request_is_greeted_in_the_business_name(
    open_pyloto: OpenPyloto,
) -> None:
    """A customer opening the chat for the first time (`request_welcome`, no body) gets the
    welcome template naming BUSINESS_NAME, not the apology for an unreadable message."""
    payload = load_payload("corpus/request_welcome.json")
    [message_id] = message_ids(payload)
    async with open_pyloto(BUSINESS_NAME="Clínica Sorriso Leve") as app:
        assert (await app.post(payload)).status_code == 200
        view = await app.wait_for(message_id)
        [sent] = await app.sent_for(message_id)
    assert trajectory(view) == FALLBACK_PATH
    assert view["fallback_reason"] == "welcome"
    assert view["results"]["template"] == "welcome"
    body = sent["text"]["body"]
    assert "Clínica Sorriso Leve" in body
    assert body != UNSUPPORTED_REPLY
    assert "não conseguimos ler" not in body


async def test_a_templates_file_overrides_one_template_and_keeps_the_others(
    open_pyloto: OpenPyloto, tmp_path: Path
) -> None:
    """REPLY_TEMPLATES_FILE with one key changes that reply; every other reply stays the
    shipped one, in the business's voice."""
    path = tmp_path / "respostas.toml"
    path.write_text(
        'text = "Oi! A {business_name} já viu sua mensagem. Atendemos {business_hours}."\n',
        encoding="utf-8",
    )
    texted, unsupported = text_message("Oi"), load_payload("batches/unknown_type.json")
    [unsupported_id] = message_ids(unsupported)
    variables = {
        "REPLY_TEMPLATES_FILE": str(path),
        "BUSINESS_NAME": "Padaria Pão Quente",
        "BUSINESS_HOURS": "todos os dias, das 6h às 20h",
    }
    async with open_pyloto(**variables) as app:
        assert (await app.post(envelope([texted]))).status_code == 200
        assert (await app.post(unsupported)).status_code == 200
        [text_sent] = await app.sent_for((await app.wait_for(texted["id"]))["message_id"])
        [unsupported_sent] = await app.sent_for((await app.wait_for(unsupported_id))["message_id"])
    text_reply, unsupported_reply = text_sent["text"]["body"], unsupported_sent["text"]["body"]
    assert text_reply == (
        "Oi! A Padaria Pão Quente já viu sua mensagem. Atendemos todos os dias, das 6h às 20h."
    )
    shipped = shipped_templates("Padaria Pão Quente", "todos os dias, das 6h às 20h")
    assert unsupported_reply == shipped.render("unsupported")


async def test_reaction_is_ignored_without_a_reply(pyloto: Pyloto) -> None:
    """A reaction ends `ignored`: no reply is built and the outbox has no row for it."""
    payload = load_payload("batches/reaction.json")
    [message_id] = message_ids(payload)
    assert (await pyloto.post(payload)).status_code == 200
    view = await pyloto.wait_for(message_id)
    assert view["state"] == "ignored"
    assert trajectory(view) == ["received", "ignored"]
    assert view["reply"] is None
    assert view["outbound_message_id"] is None
    await pyloto.wait_idle()
    assert await pyloto.sent_for(message_id) == []
    assert await pyloto.outbox_count() == 0


async def test_batch_of_three_entries_with_two_messages_each_sends_six_replies(
    pyloto: Pyloto,
) -> None:
    """3 entries x 2 messages in one POST → 6 records and one reply each, except that the
    third customer's button asks for a person ("Quero falar com atendente"): that one is
    answered with the handoff's acknowledgment and their voice note after it is kept for
    the agent (`with_agent`, no reply) unless its own reply was claimed before the handoff
    was saved (the two run side by side)."""
    payload = load_payload("batches/three_entries_two_messages.json")
    ids = message_ids(payload)
    assert len(set(ids)) == 6
    response = await pyloto.post(payload)
    assert response.status_code == 200
    assert response.json() == {"created": 6, "duplicates": 0, "statuses": 0, "skipped": 0}
    asked, held = "wamid.BATCH.E3.M1", "wamid.BATCH.E3.M2"
    for message_id in ids:
        await pyloto.wait_for(message_id)
    await pyloto.wait_idle()
    states = await pyloto.records()
    assert states[held] in ("with_agent", "sent")
    assert {**states, held: "sent"} == dict.fromkeys(ids, "sent")
    for message_id in ids:
        replies = 0 if states[message_id] == "with_agent" else 1
        assert len(await pyloto.sent_for(message_id)) == replies
    assert (await pyloto.view(asked))["results"]["template"] == "handoff"
    assert await pyloto.outbox_count() == (5 if states[held] == "with_agent" else 6)


async def test_batch_that_repeats_a_message_id_stores_one_record(pyloto: Pyloto) -> None:
    """The same wamid twice in one batch → one record and one reply."""
    payload = load_payload("batches/repeated_message_id.json")
    ids = message_ids(payload)
    assert len(ids) == 2
    assert len(set(ids)) == 1
    response = await pyloto.post(payload)
    assert response.status_code == 200
    assert response.json()["created"] == 1
    await pyloto.wait_for(ids[0], {"sent"})
    await pyloto.wait_idle()
    assert await pyloto.records() == {ids[0]: "sent"}
    assert len(await pyloto.sent_for(ids[0])) == 1


async def test_repeat_across_entries_and_redelivery_after_sent_stores_one_record(
    pyloto: Pyloto,
) -> None:
    """A wamid in two entries of one POST, then redelivered after `sent` → still one reply."""
    message = text_message("Vocês trabalham com entrega?")
    payload = envelope([message])
    payload["entry"].append(copy.deepcopy(payload["entry"][0]))
    assert (await pyloto.post(payload)).json()["created"] == 1
    await pyloto.wait_for(message["id"], {"sent"})
    again = await pyloto.post(envelope([message]))
    assert again.status_code == 200
    assert again.json()["duplicates"] == 1
    assert again.json()["created"] == 0
    await pyloto.wait_idle()
    assert len(await pyloto.sent_for(message["id"])) == 1
    assert (await pyloto.view(message["id"]))["state"] == "sent"


async def test_same_batch_posted_twenty_times_concurrently_is_handled_once(
    pyloto: Pyloto,
) -> None:
    """20 concurrent POSTs of one 6-message batch → all 200, one record and one send per message."""
    payload = load_payload("batches/three_entries_two_messages.json")
    # The batch's button asks for a person; here every message wants the bot's reply.
    value = payload["entry"][2]["changes"][0]["value"]
    value["messages"][0]["button"]["text"] = "Ver horários"
    ids = message_ids(payload)
    body = encode(payload)
    responses = await asyncio.gather(*(pyloto.post(body) for _ in range(20)))
    assert [r.status_code for r in responses] == [200] * 20
    assert sum(r.json()["created"] for r in responses) == len(ids)
    assert sum(r.json()["duplicates"] for r in responses) == len(ids) * 19
    for message_id in ids:
        await pyloto.wait_for(message_id, {"sent"})
    await pyloto.wait_idle()
    assert await pyloto.records() == dict.fromkeys(ids, "sent")
    for message_id in ids:
        sent = await pyloto.sent_for(message_id)
        assert len(sent) == 1, f"{message_id} was sent {len(sent)} times"
    assert await pyloto.outbox_count() == len(ids)


async def test_mixed_batch_with_statuses_errors_and_other_fields_is_accepted(
    pyloto: Pyloto,
) -> None:
    """Messages, statuses, value errors and other fields in one POST → 200; the message is sent."""
    payload = load_payload("batches/mixed_fields.json")
    [message_id] = message_ids(payload)
    response = await pyloto.post(payload)
    assert response.status_code == 200
    assert response.json() == {"created": 1, "duplicates": 0, "statuses": 1, "skipped": 0}
    view = await pyloto.wait_for(message_id)
    assert view["state"] == "sent"


async def test_only_non_message_fields_is_accepted_and_stores_nothing(pyloto: Pyloto) -> None:
    """A POST with only account_update / template changes → 200 and no record."""
    payload = load_payload("batches/mixed_fields.json")
    payload["entry"] = payload["entry"][1:]
    response = await pyloto.post(payload)
    assert response.status_code == 200
    assert response.json() == {"created": 0, "duplicates": 0, "statuses": 0, "skipped": 0}
    assert await pyloto.records() == {}


@pytest.mark.parametrize(
    ("kind", "content", "template"),
    [
        (
            "image",
            {"id": "1", "mime_type": "image/jpeg", "sha256": "x", "caption": "Foto"},
            "media",
        ),
        ("sticker", {"id": "2", "mime_type": "image/webp", "sha256": "x"}, "media"),
        ("audio", {"id": "3", "mime_type": "audio/ogg", "sha256": "x", "voice": True}, "audio"),
        ("location", {"latitude": -23.5, "longitude": -46.6, "name": "Loja"}, "location"),
        ("contacts", [{"name": {"formatted_name": "Fulano"}, "phones": []}], "contacts"),
        ("button", {"payload": "SIM", "text": "Sim, quero"}, "choice"),
        (
            "interactive",
            {
                "type": "list_reply",
                "list_reply": {"id": "r1", "title": "Boleto", "description": ""},
            },
            "choice",
        ),
        ("order", {"catalog_id": "1", "product_items": []}, "order"),
    ],
)
async def test_each_kind_gets_its_template(
    pyloto: Pyloto, kind: str, content: object, template: str
) -> None:
    """Each inbound kind that needs a reply reaches `sent` with the template for that kind."""
    message = text_message("")
    del message["text"]
    message.update({"type": kind, kind: content})
    assert (await pyloto.post(envelope([message]))).status_code == 200
    view = await pyloto.wait_for(message["id"])
    assert view["state"] == "sent"
    assert view["results"]["template"] == template


@pytest.mark.parametrize("kind", ["system", "edit", "revoke"])
async def test_notices_that_need_no_reply_are_ignored(pyloto: Pyloto, kind: str) -> None:
    """System notices, edits and deletions end `ignored` with nothing sent."""
    message = text_message("")
    del message["text"]
    message.update({"type": kind, kind: {"body": "changed"}})
    assert (await pyloto.post(envelope([message]))).status_code == 200
    view = await pyloto.wait_for(message["id"])
    assert view["state"] == "ignored"
    await pyloto.wait_idle()
    assert await pyloto.sent_for(message["id"]) == []


async def test_malformed_entries_and_changes_do_not_reject_the_rest_of_the_batch(
    pyloto: Pyloto,
) -> None:
    """Odd entries and changes are skipped; the good message in the same POST is stored."""
    good = envelope([text_message("Bom dia")])
    good["entry"][:0] = ["not an entry", {"id": 5, "changes": "not a list"}]
    good["entry"][-1]["changes"].insert(0, {"field": 7, "value": []})
    response = await pyloto.post(good)
    assert response.status_code == 200
    assert response.json()["created"] == 1
    assert response.json()["skipped"] == 3
    message_id = good["entry"][-1]["changes"][-1]["value"]["messages"][0]["id"]
    assert (await pyloto.wait_for(message_id))["state"] == "sent"
