"""Handoff end to end: a customer asks for a person, an operator takes over and releases
(each mode change reaching the webhook signed, retried and free of anything personal), and
the business answering from the WhatsApp Business app silences the bot."""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Iterator

import pytest

from tests.e2e.conftest import OpenPyloto
from tests.support.helpers import (
    CONTACT_NAME,
    INTERNAL_TOKEN,
    SENDER,
    envelope,
    eventually,
    message_echoes,
    text_echo,
    text_message,
)
from tests.support.notice_receiver import NoticeReceiver

pytestmark = pytest.mark.anyio

SECRET = "handoff-e2e-secret"
ASKING = "Oi, quero falar com um atendente sobre o meu pedido 12345"


@pytest.fixture
def receiver() -> Iterator[NoticeReceiver]:
    server = NoticeReceiver(statuses=[503])  # the first delivery fails: the queue retries
    yield server
    server.stop()


def _signed(body: bytes, header: str) -> bool:
    expected = "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(header, expected)


async def test_each_mode_change_reaches_the_webhook_signed_and_clean(
    open_pyloto: OpenPyloto, receiver: NoticeReceiver
) -> None:
    variables = {"HANDOFF_WEBHOOK_URL": receiver.url, "HANDOFF_WEBHOOK_SECRET": SECRET}
    token = {"X-Internal-Token": INTERNAL_TOKEN}
    async with open_pyloto(**variables) as app:
        message = text_message(ASKING)
        assert (await app.post(envelope([message]))).status_code == 200
        view = await app.wait_for(message["id"])
        assert view["state"] == "sent"
        assert view["results"]["template"] == "handoff"
        conversation = view["conversation"]
        await eventually(lambda: len(receiver.accepted()) >= 1)

        base = f"/internal/conversations/{conversation}"
        taken = await app.client.post(f"{base}/takeover", headers=token)
        assert taken.status_code == 200, taken.text
        assert taken.json()["mode"] == "human"
        released = await app.client.post(f"{base}/release", headers=token)
        assert released.status_code == 200, released.text
        assert released.json()["mode"] == "bot"
        await eventually(lambda: len(receiver.accepted()) >= 3)

    notices = [json.loads(item.body) for item in receiver.accepted()]
    assert [(n["previous_mode"], n["mode"], n["reason"]) for n in notices] == [
        ("bot", "waiting_human", "keyword"),
        ("waiting_human", "human", "operator_takeover"),
        ("human", "bot", "agent_release"),
    ]
    assert {n["conversation"] for n in notices} == {conversation}
    assert receiver.received[0].answered == 503  # retried, and delivered once accepted
    for item in receiver.received:
        assert _signed(item.body, item.headers["x-pyloto-signature-256"])
        text = item.body.decode()
        for personal in (SENDER, CONTACT_NAME, "12345", "atendente"):
            assert personal not in text


async def test_a_reply_from_the_business_app_pauses_the_bot(open_pyloto: OpenPyloto) -> None:
    """The manager answers from the WhatsApp Business app (an `smb_message_echoes` echo):
    the echo is never answered, the conversation is the person's, and the customer's next
    message is kept for them with no bot reply (the bot does not talk over the human)."""
    token = {"X-Internal-Token": INTERNAL_TOKEN}
    async with open_pyloto() as app:
        first = text_message("Vocês têm o modelo azul?")
        assert (await app.post(envelope([first]))).status_code == 200
        assert (await app.wait_for(first["id"]))["state"] == "sent"
        echo = text_echo("Temos sim! Separei um para você.")
        assert (await app.post(message_echoes([echo]))).status_code == 200
        echoed = await app.wait_for(echo["id"])
        assert (echoed["inbound"]["kind"], echoed["state"]) == ("echo", "with_agent")
        conversation = echoed["conversation"]
        assert conversation == (await app.view(first["id"]))["conversation"]
        shown = await app.client.get(f"/internal/conversations/{conversation}", headers=token)
        assert (shown.json()["mode"], shown.json()["owner"]) == ("human", "whatsapp_business_app")

        after = text_message("Ótimo, pode reservar")
        assert (await app.post(envelope([after]))).status_code == 200
        assert (await app.wait_for(after["id"]))["state"] == "with_agent"
        await app.wait_idle()
        assert await app.sent_for(echo["id"]) == []
        assert await app.sent_for(after["id"]) == []
        assert await app.outbox_count() == 1  # the first message's reply, nothing since
        # The manager's words are a turn LLM#2 reads once the bot answers again.
        turns = shown.json()["turns"]
        assert [t["role"] for t in turns][-1] == "agent"
