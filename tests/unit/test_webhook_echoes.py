"""parse_webhook on `smb_message_echoes`: what the business sent from the WhatsApp Business app
on a coexistence number becomes a message of kind `echo` from the customer it went to."""

from __future__ import annotations

from typing import Any

import pytest

from pyloto_corp.adapters.whatsapp_webhook import parse_webhook
from pyloto_corp.domain.records import InboundMessage
from tests.support.helpers import (
    BSUID,
    SENDER,
    encode,
    envelope,
    load_payload,
    message_echoes,
    text_echo,
    text_message,
)

CUSTOMER = "5511912345678"


def only_echo(payload: dict[str, Any]) -> InboundMessage:
    parsed = parse_webhook(encode(payload))
    assert parsed.skipped == 0
    [echo] = parsed.messages
    return echo


def test_a_text_echo_is_a_message_of_kind_echo_from_the_customer() -> None:
    """The echo's id, its recipient (as a wa_id: the `+` the business typed is dropped) as
    the sender, the business number it went from, its time and its body."""
    echo = only_echo(load_payload("echoes/text.json"))
    assert echo.kind == "echo"
    assert echo.message_id == "wamid.HBgNNTUxMTkxMjM0NTY3OBUCABEYEkVDSE9URVhUMDAwMDAwMDEA"
    assert echo.sender == CUSTOMER
    assert echo.phone == CUSTOMER
    assert echo.user_id is None
    assert echo.phone_number_id == "106540352242922"
    assert echo.timestamp == 1739321024
    assert echo.text == "Oi João, aqui é a Ana da loja: seu pedido sai hoje à tarde."
    assert echo.details == {"echo_type": "text"}


def test_a_media_echo_keeps_its_type_and_object_and_has_no_text() -> None:
    """An image echo: no text, `details` names the type and keeps the image object; the
    recipient's BSUID (`to_user_id`) is the user id beside the number."""
    echo = only_echo(load_payload("echoes/image.json"))
    assert echo.kind == "echo"
    assert echo.text is None
    assert echo.sender == CUSTOMER
    assert echo.user_id == BSUID
    assert echo.details["echo_type"] == "image"
    assert echo.details["image"]["id"] == "1479537139650973"
    assert echo.details["image"]["mime_type"] == "image/jpeg"


@pytest.mark.parametrize("field", ["to_user_id", "recipient_user_id"])
def test_an_echo_to_a_customer_known_by_bsuid_alone_is_from_that_bsuid(field: str) -> None:
    """Without `to` (a customer whose number is not shown) the BSUID is the sender."""
    item = text_echo("Pode vir buscar amanhã")
    del item["to"]
    item[field] = BSUID
    echo = only_echo(message_echoes([item]))
    assert echo.sender == BSUID
    assert echo.bsuid == BSUID
    assert echo.phone is None


def test_an_echo_of_a_type_without_an_object_still_parses() -> None:
    """A revoke (or any type) echo is read with its type; a missing object is no error."""
    revoke = {**text_echo("x"), "type": "revoke", "revoke": {"original_message_id": "wamid.A"}}
    del revoke["text"]
    bare = {**text_echo("x"), "type": "future_type"}
    del bare["text"]
    parsed = parse_webhook(encode(message_echoes([revoke, bare])))
    assert parsed.skipped == 0
    assert [m.details for m in parsed.messages] == [
        {"echo_type": "revoke", "revoke": {"original_message_id": "wamid.A"}},
        {"echo_type": "future_type"},
    ]
    assert all(m.kind == "echo" and m.text is None for m in parsed.messages)


@pytest.mark.parametrize(
    "broken",
    [
        "not an object",
        42,
        None,
        {"from": "15550783881", "to": CUSTOMER, "type": "text"},  # no id
        {"id": "", "to": CUSTOMER, "type": "text"},
        {"id": ["wamid.X"], "to": CUSTOMER},
        {"id": "wamid.NOBODY", "type": "text", "text": {"body": "para quem?"}},  # no recipient
        {"id": "wamid.BADBSUID", "to_user_id": "not a bsuid", "type": "text"},
        {"id": "wamid.BADTO", "to": {"number": CUSTOMER}, "type": "text"},
        {"id": "wamid.BADTIME", "to": CUSTOMER, "type": 7},
    ],
)
def test_a_malformed_echo_is_skipped_and_the_rest_parses(broken: Any) -> None:
    """One unreadable echo is counted as skipped; the echo beside it is still read."""
    good = text_echo("Seu pedido chegou")
    parsed = parse_webhook(encode(message_echoes([broken, good])))
    assert [m.message_id for m in parsed.messages] == [good["id"]]
    assert parsed.skipped == 1


@pytest.mark.parametrize("echoes", ["not a list", {"id": "wamid.X"}, None, 3])
def test_message_echoes_of_the_wrong_shape_parse_as_nothing(echoes: Any) -> None:
    """`message_echoes` that is not a list yields no message and no error."""
    payload = message_echoes([])
    payload["entry"][0]["changes"][0]["value"]["message_echoes"] = echoes
    parsed = parse_webhook(encode(payload))
    assert parsed.messages == []


def test_echoes_and_messages_in_one_webhook_are_all_read() -> None:
    """A batch with an inbound message and an echo change gives both, each with its kind."""
    payload = envelope([text_message("Oi")])
    payload["entry"][0]["changes"].append(
        message_echoes([text_echo("Olá!")])["entry"][0]["changes"][0]
    )
    parsed = parse_webhook(encode(payload))
    assert [(m.kind, m.sender) for m in parsed.messages] == [("text", SENDER), ("echo", SENDER)]


def test_an_echo_is_not_read_from_the_messages_field() -> None:
    """`message_echoes` only counts on the smb_message_echoes field."""
    payload = envelope([text_message("Oi")])
    payload["entry"][0]["changes"][0]["value"]["message_echoes"] = [text_echo("x")]
    parsed = parse_webhook(encode(payload))
    assert [m.kind for m in parsed.messages] == ["text"]
