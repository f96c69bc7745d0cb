"""parse_webhook: every message type, tolerant batches, statuses, errors and bad envelopes."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from pyloto_corp.adapters.whatsapp_webhook import InvalidWebhook, parse_webhook
from pyloto_corp.domain.records import InboundMessage, ParsedWebhook
from pyloto_corp.domain.replies import reply_key
from tests.support.helpers import encode, envelope, load_payload, status, text_message

BR_SENDER = "5511912345678"
BR_NAME = "João Conceição"
TEXT_BODY = (
    "Olá! Vocês entregam em São Paulo? Preciso de um orçamento até amanhã às 15h — é urgente 🙏"
)
OUR_MESSAGE = "wamid.HBgNNTUxMTkxMjM0NTY3OBUCABEYEjVBRjdDMDE4RTZCN0Q1MkQ4OQA="


def parse_fixture(name: str) -> ParsedWebhook:
    """Parse tests/data/messages/<name>.json as the raw bytes Meta would POST."""
    return parse_webhook(encode(load_payload(f"messages/{name}.json", restamp=False)))


def only_message(name: str) -> InboundMessage:
    """The single message of a one-message fixture."""
    parsed = parse_fixture(name)
    assert parsed.skipped == 0
    assert len(parsed.messages) == 1
    return parsed.messages[0]


def value_of(payload: dict[str, Any]) -> dict[str, Any]:
    """The `value` of the first change of the first entry."""
    value: dict[str, Any] = payload["entry"][0]["changes"][0]["value"]
    return value


@pytest.mark.parametrize(
    ("fixture", "kind", "text"),
    [
        ("text", "text", TEXT_BODY),
        ("image", "image", "Foto do produto com defeito, não liga 😕"),
        ("audio", "audio", None),
        ("video", "video", "Vídeo mostrando o barulho na máquina"),
        ("document", "document", "Segue a nota fiscal da compra"),
        ("sticker", "sticker", None),
        ("location", "location", "Loja Paulista"),
        ("contacts", "contacts", None),
        ("interactive_button_reply", "interactive", "Ver horários"),
        ("interactive_list_reply", "interactive", "Plano Família"),
        ("button", "button", "Confirmar pedido"),
        ("order", "order", None),
        ("reaction", "reaction", "❤️"),
        ("reaction_removed", "reaction", ""),
        ("unsupported", "unsupported", None),
    ],
)  # fmt: skip
def test_each_message_type_parses(fixture: str, kind: str, text: str | None) -> None:
    """Every message type yields its kind, readable text, sender, contact name and metadata."""
    message = only_message(fixture)
    assert message.kind == kind
    assert message.text == text
    assert message.sender == BR_SENDER
    assert message.contact_name == BR_NAME
    assert message.message_id.startswith("wamid.")
    assert message.timestamp == 1_732_531_200
    assert message.phone_number_id == "106540352242922"


def test_non_ascii_text_survives_the_raw_bytes() -> None:
    """Portuguese accents and emoji in the UTF-8 body are read exactly, not escaped or lost."""
    message = only_message("text")
    assert message.text is not None
    assert "São Paulo" in message.text
    assert "orçamento" in message.text
    assert message.text.endswith("🙏")
    assert message.contact_name == "João Conceição"


def test_media_keeps_its_id_and_mime_type() -> None:
    """Media messages keep the media id, MIME type and sha256 the media step needs to fetch
    and check it, and whether audio is a voice note."""
    image = only_message("image").details
    assert image["id"] == "1479537139650973"
    assert image["mime_type"] == "image/jpeg"
    assert "voice" not in image
    audio = only_message("audio")
    assert audio.details == {
        "id": "1098344661372418",
        "mime_type": "audio/ogg; codecs=opus",
        "sha256": "b7Wp2N0dBrpM6SzqJUDnYgqk5v6rAUYgJ5yMmB9sJ2c=",
        "voice": True,  # recorded in WhatsApp: the media step transcribes it
    }
    assert only_message("document").details["mime_type"] == "application/pdf"
    assert only_message("sticker").details["mime_type"] == "image/webp"


def test_replies_to_our_messages_keep_the_context_and_choice() -> None:
    """Button and list replies carry the id of the message they answer and the chosen id."""
    button = only_message("interactive_button_reply")
    assert button.context_message_id == OUR_MESSAGE
    assert button.details == {"type": "button_reply", "id": "ver_horarios"}
    choice = only_message("interactive_list_reply")
    assert choice.details == {"type": "list_reply", "id": "plano_familia"}
    template = only_message("button")
    assert template.context_message_id == OUR_MESSAGE
    assert template.details == {"payload": "CONFIRMAR_PEDIDO"}


def test_plain_messages_have_no_context() -> None:
    """A message that replies to nothing has no context id."""
    assert only_message("text").context_message_id is None


def test_reaction_points_at_the_message_it_reacts_to() -> None:
    """A reaction keeps its target message id; an empty emoji (removal) is kept as ''."""
    assert only_message("reaction").details == {"message_id": OUR_MESSAGE}
    removed = only_message("reaction_removed")
    assert removed.text == ""
    assert removed.details == {"message_id": OUR_MESSAGE}


def test_system_message_without_contacts_parses() -> None:
    """A system notice (no `contacts` in the value) parses as `system` with no name."""
    message = only_message("system")
    assert message.kind == "system"
    assert message.sender == BR_SENDER
    assert message.contact_name is None


def test_unknown_future_type_becomes_unsupported_keeping_its_type() -> None:
    """A type this version does not know parses as `unsupported` with the original type kept."""
    message = only_message("unknown_type")
    assert message.kind == "unsupported"
    assert message.details == {"original_type": "hologram"}
    assert message.text is None


def test_unsupported_type_from_meta_is_not_marked_as_unknown() -> None:
    """Meta's own `unsupported` type (error 131051) is not an unknown type of ours."""
    payload = load_payload("messages/unsupported.json")
    assert value_of(payload)["messages"][0]["errors"][0]["code"] == 131051
    assert only_message("unsupported").details == {}


def test_absurdly_long_unknown_type_is_cut() -> None:
    """The kept original type is bounded, so a hostile type name cannot bloat the record."""
    payload = load_payload("messages/unknown_type.json")
    value_of(payload)["messages"][0]["type"] = "x" * 10_000
    (message,) = parse_webhook(encode(payload)).messages
    assert message.kind == "unsupported"
    assert message.details == {"original_type": "x" * 64}


def test_contacts_with_user_id_give_the_name() -> None:
    """Newer payloads with `user_id` in contacts parse the same as older ones without it."""
    message = only_message("text_with_user_id")
    assert value_of(load_payload("messages/text_with_user_id.json"))["contacts"][0]["user_id"]
    assert message.sender == "5521987654321"
    assert message.contact_name == "Ana Luíza Pereira"
    assert message.text == "Bom dia, gostaria de remarcar minha consulta."
    assert "user_id" not in value_of(load_payload("messages/text.json"))["contacts"][0]


def test_sender_known_only_by_user_id_is_named_through_it() -> None:
    """A message without `from` is attributed to its user id, and the contact found by it."""
    payload = load_payload("messages/text_with_user_id.json")
    raw = value_of(payload)["messages"][0]
    del raw["from"]
    raw["from_user_id"] = "BR.1023456789012345"
    (message,) = parse_webhook(encode(payload)).messages
    assert message.sender == "BR.1023456789012345"
    assert message.contact_name == "Ana Luíza Pereira"


def test_contact_name_is_matched_to_each_sender() -> None:
    """In a batch from two people, each message gets its own sender's name."""
    first = text_message("Oi", sender="5511911110000")
    second = text_message("Olá", sender="5521922220000")
    payload = envelope([first, second])
    value_of(payload)["contacts"] = [
        {"profile": {"name": "Beatriz Araújo"}, "wa_id": "5521922220000"},
        {"profile": {"name": "Cauã Ribeiro"}, "wa_id": "5511911110000"},
    ]
    names = {m.sender: m.contact_name for m in parse_webhook(encode(payload)).messages}
    assert names == {"5511911110000": "Cauã Ribeiro", "5521922220000": "Beatriz Araújo"}


@pytest.mark.parametrize(
    "broken",
    [
        {"from": BR_SENDER, "timestamp": "1732531200", "type": "text", "text": {"body": "sem id"}},
        {"id": 12345, "from": BR_SENDER, "type": "text", "text": {"body": "id numérico"}},
        {"id": "", "from": BR_SENDER, "type": "text"},
        {"id": "wamid.BADTYPE", "from": BR_SENDER, "type": ["text"]},
        {"id": "wamid.BADFROM", "from": {"wa_id": BR_SENDER}, "type": "text"},
        {"id": "wamid.BADCONTEXT", "from": BR_SENDER, "type": "text", "context": "wamid.X"},
        "not an object",
        None,
        42,
    ],
)
def test_malformed_message_is_skipped_and_the_rest_of_the_batch_parses(broken: Any) -> None:
    """One unreadable message item is counted as skipped; its neighbours still parse."""
    before = text_message("primeira", message_id="wamid.FIRST")
    after = text_message("última", message_id="wamid.LAST")
    parsed = parse_webhook(encode(envelope([before, broken, after])))
    assert [m.message_id for m in parsed.messages] == ["wamid.FIRST", "wamid.LAST"]
    assert [m.text for m in parsed.messages] == ["primeira", "última"]
    assert parsed.skipped == 1


def test_message_with_a_body_of_the_wrong_shape_still_parses() -> None:
    """A text message whose `text` is not an object keeps its id (it can still be answered)."""
    broken = {"id": "wamid.ODD", "from": BR_SENDER, "timestamp": "abc", "type": "text", "text": "x"}
    (message,) = parse_webhook(encode(envelope([broken]))).messages
    assert message.message_id == "wamid.ODD"
    assert message.kind == "text"
    assert message.text is None
    assert message.timestamp == 0


def test_malformed_entry_or_change_is_skipped_and_the_rest_parses() -> None:
    """An entry or change of the wrong shape is skipped; messages beside it are still read."""
    payload = load_payload("messages/text.json")
    payload["entry"][0]["changes"].insert(0, "not a change")
    payload["entry"].insert(0, ["not", "an", "entry"])
    parsed = parse_webhook(encode(payload))
    assert [m.kind for m in parsed.messages] == ["text"]
    assert parsed.skipped == 2


def test_non_message_fields_are_ignored() -> None:
    """Changes for other fields (account_update, templates, calls) are accepted and ignored."""
    payload = load_payload("messages/text.json")
    changes = payload["entry"][0]["changes"]
    changes.insert(0, {"field": "account_update", "value": {"event": "VERIFIED_ACCOUNT"}})
    changes.append(
        {
            "field": "message_template_status_update",
            "value": {"event": "APPROVED", "message_template_id": 123, "messages": ["not ours"]},
        }
    )
    parsed = parse_webhook(encode(payload))
    assert len(parsed.messages) == 1
    assert parsed.skipped == 0
    assert parsed.statuses == []


def test_every_entry_change_and_message_is_read() -> None:
    """Two entries, each of two changes of two messages, (plus statuses) all come out, in order."""
    payload: dict[str, Any] = {"object": "whatsapp_business_account", "entry": []}
    expected = []
    for e in range(2):
        changes = []
        for c in range(2):
            ids = [f"wamid.E{e}C{c}M{m}" for m in range(2)]
            expected += ids
            value = value_of(envelope([text_message(f"msg {i}", message_id=i) for i in ids]))
            value["statuses"] = [status(f"wamid.OUT.E{e}C{c}", "delivered", 1_732_531_300)]
            changes.append({"field": "messages", "value": value})
        payload["entry"].append({"id": f"WABA{e}", "changes": changes})
    parsed = parse_webhook(encode(payload))
    assert [m.message_id for m in parsed.messages] == expected
    assert len(parsed.statuses) == 4


def test_a_batch_repeating_a_message_keeps_both_copies() -> None:
    """Parsing does not dedupe; duplicates are left for the store's create-if-absent."""
    message = text_message("de novo", message_id="wamid.TWICE")
    parsed = parse_webhook(encode(envelope([message, copy.deepcopy(message)])))
    assert [m.message_id for m in parsed.messages] == ["wamid.TWICE", "wamid.TWICE"]


@pytest.mark.parametrize(
    ("fixture", "state"),
    [
        ("status_sent", "sent"),
        ("status_delivered", "delivered"),
        ("status_read", "read"),
        ("status_failed", "failed"),
    ],
)
def test_statuses_parse(fixture: str, state: str) -> None:
    """A delivery status gives our outbound id, its state, time and the echoed callback data."""
    parsed = parse_fixture(fixture)
    assert parsed.messages == []
    (update,) = parsed.statuses
    assert update.outbound_message_id == OUR_MESSAGE
    assert update.status == state
    assert update.timestamp > 1_732_531_200
    # The fixture's reply predates reply keys: it echoes the bare id, read as its key.
    assert update.callback_data == reply_key(only_message("text").message_id)
    assert update.rank > 0


def test_failed_status_keeps_its_error_codes() -> None:
    """A failed status carries Meta's error code and title for the record."""
    (update,) = parse_fixture("status_failed").statuses
    assert update.errors == [{"code": 131047, "title": "Re-engagement message"}]


def test_statuses_are_ranked_so_they_only_move_forward() -> None:
    """sent < delivered < read, and failed outranks them; an unknown status has rank 0."""
    ranks = {
        name: parse_fixture(f"status_{name}").statuses[0].rank
        for name in ("sent", "delivered", "read", "failed")
    }
    assert ranks["sent"] < ranks["delivered"] < ranks["read"] < ranks["failed"]
    payload = envelope(statuses=[status("wamid.OUT", "deleted", 1_732_531_300)])
    assert parse_webhook(encode(payload)).statuses[0].rank == 0


def test_malformed_status_is_skipped() -> None:
    """A status without an id or state is skipped; the valid one next to it is read."""
    good = status("wamid.OUT.GOOD", "read", 1_732_531_300)
    payload = envelope(statuses=[{"status": "read"}, {"id": "wamid.OUT.X"}, good])
    parsed = parse_webhook(encode(payload))
    assert [s.outbound_message_id for s in parsed.statuses] == ["wamid.OUT.GOOD"]
    assert parsed.skipped == 2


def test_value_errors_are_read() -> None:
    """Errors Meta reports in `value.errors` come out whole, for the log."""
    parsed = parse_fixture("errors")
    assert [e["code"] for e in parsed.errors] == [131000]
    assert parsed.errors[0]["error_data"]["details"].startswith("Message failed")


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"not json",
        b"\xff\xfe\x00",
        b'{"object": "whatsapp_business_account", "entry": [',
        b"[]",
        b"{}",
        b'"whatsapp_business_account"',
        b'{"object": "page", "entry": []}',
        b'{"object": "instagram", "entry": [{"id": "1", "changes": []}]}',
        b'{"object": "whatsapp_business_account"}',
        b'{"object": "whatsapp_business_account", "entry": {}}',
        b'{"object": 7, "entry": []}',
    ],
)
def test_non_json_or_non_whatsapp_envelopes_are_invalid(body: bytes) -> None:
    """Bodies that are not JSON or not a WhatsApp Business Account envelope raise InvalidWebhook."""
    with pytest.raises(InvalidWebhook):
        parse_webhook(body)


def test_empty_envelope_is_valid_and_empty() -> None:
    """A well-formed envelope with no entries parses to nothing (and is answered 200)."""
    parsed = parse_webhook(
        json.dumps({"object": "whatsapp_business_account", "entry": []}).encode()
    )
    assert parsed == ParsedWebhook()


def test_an_edit_and_a_revoke_name_the_message_they_change() -> None:
    """Coexistence numbers: an edit carries the new text (a text body or a caption) and the
    message it edits; a revoke the message it deletes. A broken inner message keeps the id."""
    edit = {
        "from": "5511988887777", "id": "wamid.EDIT", "timestamp": "1739321024", "type": "edit",
        "edit": {
            "original_message_id": "wamid.ORIGINAL",
            "message": {"type": "image", "image": {"caption": "novo texto", "id": "m1"}},
        },
    }  # fmt: skip
    revoke = {
        "from": "5511988887777", "id": "wamid.REVOKE", "timestamp": "1739321025", "type": "revoke",
        "revoke": {"original_message_id": "wamid.ORIGINAL"},
    }  # fmt: skip
    broken = {
        **edit,
        "id": "wamid.BROKEN",
        "edit": {"original_message_id": "wamid.O", "message": 7},
    }
    parsed = parse_webhook(encode(envelope([edit, revoke, broken]))).messages
    assert [(m.kind, m.text, m.details) for m in parsed] == [
        ("edit", "novo texto", {"original_message_id": "wamid.ORIGINAL", "type": "image"}),
        ("revoke", None, {"original_message_id": "wamid.ORIGINAL"}),
        ("edit", None, {"original_message_id": "wamid.O"}),
    ]
