"""Deterministic replies: a Portuguese template per kind, and the Graph API body that carries it."""

from __future__ import annotations

import pytest

from pyloto_corp.adapters.whatsapp_webhook import parse_webhook
from pyloto_corp.domain.intents import TEMPLATED_EVENTS
from pyloto_corp.domain.records import InboundMessage
from pyloto_corp.domain.replies import (
    REPLY_KEY_LENGTH,
    TEXT_BODY_LIMIT,
    reply_key,
    status_key,
    text_reply_body,
)
from tests.support.helpers import encode, load_payload, shipped_templates

TEMPLATES = shipped_templates("Padaria Pão Quente", "todos os dias, das 6h às 20h")


def template_for(message: InboundMessage, event: str | None = None) -> tuple[str, str]:
    """The shipped template for `message`, in the voice of the bakery above."""
    return TEMPLATES.for_message(message, event)


def fixture_message(name: str) -> InboundMessage:
    """The message of tests/data/messages/<name>.json, parsed as the webhook would."""
    (message,) = parse_webhook(encode(load_payload(f"messages/{name}.json"))).messages
    return message


def inbound(kind: str, text: str | None = None) -> InboundMessage:
    """A minimal inbound message of `kind`."""
    return InboundMessage(
        message_id="wamid.REPLYTEST", sender="5511912345678", kind=kind, timestamp=0, text=text
    )


@pytest.mark.parametrize(
    ("fixture", "template", "phrase"),
    [
        ("text", "text", "Recebemos sua mensagem"),
        ("text_with_user_id", "text", "Recebemos sua mensagem"),
        ("image", "media", "Recebemos seu arquivo"),
        ("video", "media", "Recebemos seu arquivo"),
        ("document", "media", "Recebemos seu arquivo"),
        ("sticker", "media", "Recebemos seu arquivo"),
        ("audio", "audio", "Recebemos seu áudio"),
        ("location", "location", "Recebemos sua localização"),
        ("contacts", "contacts", "Recebemos o contato"),
        ("order", "order", "Recebemos seu pedido"),
        ("unsupported", "unsupported", "não conseguimos ler esse tipo de mensagem"),
        ("unknown_type", "unsupported", "não conseguimos ler esse tipo de mensagem"),
    ],
)
def test_each_kind_picks_its_portuguese_template(fixture: str, template: str, phrase: str) -> None:
    """The parsed fixture of each kind gets its own template, written in Portuguese."""
    name, text = template_for(fixture_message(fixture))
    assert name == template
    assert phrase in text


def test_a_welcome_request_gets_the_welcome_template_naming_the_business() -> None:
    """A customer opening the chat for the first time (`request_welcome`, no body) is
    greeted, in the business's name, not told their message could not be read."""
    payload = load_payload("corpus/request_welcome.json")
    (message,) = parse_webhook(encode(payload)).messages
    assert message.kind == "request_welcome"
    name, text = template_for(message)
    assert name == "welcome"
    assert "Padaria Pão Quente" in text
    assert "não conseguimos ler" not in text


@pytest.mark.parametrize(
    ("fixture", "title"),
    [
        ("interactive_button_reply", "Ver horários"),
        ("interactive_list_reply", "Plano Família"),
        ("button", "Confirmar pedido"),
    ],
)
def test_choices_echo_the_chosen_title(fixture: str, title: str) -> None:
    """Button, list and template quick replies answer with the title the customer picked."""
    name, text = template_for(fixture_message(fixture))
    assert name == "choice"
    assert f"Recebemos sua escolha: “{title}”." in text


def test_choice_without_a_title_falls_back_to_the_text_template() -> None:
    """An interactive reply with no readable title gets the general reply, not empty quotes."""
    name, text = template_for(inbound("interactive", text="   "))
    assert name == "text"
    assert "“" not in text
    assert "Recebemos sua mensagem" in text


def test_long_choice_title_is_cut() -> None:
    """A hostile 5000-character title is cut to 100 characters inside the quotes."""
    _, text = template_for(inbound("button", text="A" * 5000))
    assert "“" + "A" * 100 + "”" in text
    assert "A" * 101 not in text


def test_templates_differ_by_kind() -> None:
    """Each template name maps to its own text (no copy-paste between kinds)."""
    kinds = [
        "text",
        "image",
        "audio",
        "location",
        "contacts",
        "order",
        "unsupported",
        "request_welcome",
    ]
    texts = {template_for(inbound(kind))[1] for kind in kinds}
    assert len(texts) == len(kinds)


def test_reply_body_is_a_graph_api_text_reply() -> None:
    """The body replies in context to the sender, as text, with the callback data to reconcile."""
    message = fixture_message("text")
    _, text = template_for(message)
    body = text_reply_body(message, text)
    assert body == {
        "messaging_product": "whatsapp",
        "recipient_type": "individual",
        "to": "5511912345678",
        "context": {"message_id": message.message_id},
        "type": "text",
        "text": {"preview_url": False, "body": text},
        "biz_opaque_callback_data": reply_key(message.message_id),
    }


def test_reply_body_respects_the_text_limit() -> None:
    """A body over 4096 characters is cut to WhatsApp's limit, never sent over it."""
    body = text_reply_body(inbound("text"), "é" * 5000)
    assert TEXT_BODY_LIMIT == 4096
    assert len(body["text"]["body"]) == 4096


@pytest.mark.parametrize("length", [1, 511, 512, 600, 5000])
def test_callback_data_is_a_fixed_length_key_of_the_whole_id(length: int) -> None:
    """biz_opaque_callback_data stays far under the Graph API's 512 characters for any id,
    and ids that share their first 512 characters still get different keys."""
    prefix = "wamid." + "x" * (length - 1)
    one, other = reply_key(prefix + "A"), reply_key(prefix + "B")
    assert len(one) == len(other) == REPLY_KEY_LENGTH < 512
    assert one != other
    assert status_key(one) == one
    assert status_key(prefix + "A") == one  # a reply from before the keys: the bare id


def test_long_ids_sharing_a_prefix_get_their_own_reply_key() -> None:
    """A 600- and a 5,000-character id with the same first 512 characters once shared one
    callback, so a status of one reply reached the other record."""
    messages = [
        InboundMessage(message_id="a" * n, sender="5511912345678", kind="text", timestamp=0)
        for n in (600, 5000)
    ]
    callbacks = {text_reply_body(m, "Olá")["biz_opaque_callback_data"] for m in messages}
    assert len(callbacks) == 2


@pytest.mark.parametrize(
    "kind", ["text", "image", "audio", "location", "contacts", "order", "unsupported"]
)
def test_each_kind_template_names_the_business(kind: str) -> None:
    """The templates speak for the configured business: they name BUSINESS_NAME."""
    _, text = template_for(inbound(kind))
    assert "Padaria Pão Quente" in text
    assert "{" not in text


def test_the_text_and_welcome_templates_quote_the_opening_hours() -> None:
    """A customer told to wait is told until when: BUSINESS_HOURS is in the reply."""
    for kind in ("text", "request_welcome"):
        assert "todos os dias, das 6h às 20h" in template_for(inbound(kind))[1]


@pytest.mark.parametrize("event", TEMPLATED_EVENTS)
def test_each_event_template_names_the_business(event: str) -> None:
    """The reply for a detected event is in the business's voice too."""
    name, text = template_for(inbound("text"), event)
    assert name == f"event:{event}"
    assert "Padaria Pão Quente" in text


def test_a_business_name_with_braces_is_written_as_given() -> None:
    """The business's values are filled in, never read as placeholders themselves."""
    templates = shipped_templates("Loja {choice} & Cia", "24h")
    _, text = templates.for_message(inbound("text"))
    assert "Loja {choice} & Cia" in text
