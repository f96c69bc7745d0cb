"""Realistic WhatsApp webhook payloads, sample data and a poller, shared by the tests."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio

from pyloto_corp.adapters.reply_templates import load_reply_templates
from pyloto_corp.config import BusinessSettings
from pyloto_corp.domain.replies import ReplyTemplates

REPO = Path(__file__).resolve().parents[2]
DATA = REPO / "tests" / "data"
APP_SECRET = "test-app-secret"
INTERNAL_TOKEN = "test-internal-token"
VERIFY_TOKEN = "test-verify-token"
SENDER = "5511987654321"
CONTACT_NAME = "Maria Aparecida"
# Personal data as customers write it, which no log line or span may carry.
PHONE = "+55 (11) 91234-5678"
EMAIL = "maria.aparecida@exemplo.com.br"
CPF = "123.456.789-09"
CNPJ = "12.345.678/0001-90"
# A customer's business-scoped user id and username (personal data too).
BSUID = "BR.1502576394655843"
USERNAME = "mariaaparecida.cortes"


def shipped_templates(
    name: str = BusinessSettings().name, hours: str = BusinessSettings().hours
) -> ReplyTemplates:
    """The shipped reply templates in the voice of the business `name` (open `hours`), as
    bootstrap reads them without REPLY_TEMPLATES_FILE (the default business if not given)."""
    return load_reply_templates(None, name, hours)


def load_payload(name: str, restamp: bool = True) -> dict[str, Any]:
    """A payload fixture from tests/data/, its messages stamped now unless not `restamp`: a
    message is answered with free text only within 24 hours of its timestamp (WhatsApp's
    window), so a fixture's fixed date would be too old to answer."""
    value: dict[str, Any] = json.loads((DATA / name).read_text(encoding="utf-8"))
    return restamped(value) if restamp else value


def now_stamp() -> str:
    """Meta's timestamp (Unix seconds, a string) of a message written now."""
    return str(int(time.time()))


def restamped(payload: dict[str, Any], stamp: str | None = None) -> dict[str, Any]:
    """`payload` with each message's timestamp set to `stamp` (now by default)."""
    stamp = stamp or now_stamp()
    for entry in payload.get("entry") or []:
        for change in entry.get("changes") or []:
            value = change.get("value")
            if not isinstance(value, dict):
                continue
            for message in value.get("messages") or []:
                if isinstance(message, dict) and "timestamp" in message:
                    message["timestamp"] = stamp
    return payload


def new_wamid() -> str:
    """A unique inbound message id."""
    return f"wamid.TEST{uuid.uuid4().hex.upper()}"


def realistic_wamid(sender: str) -> str:
    """A wamid shaped like Meta's: base64 of a blob that embeds the sender's number."""
    blob = b"\x18\x0d" + sender.encode() + b"\x15\x02\x00\x12\x18\x14" + b"3EB0C7A1F05B49D318A0"
    return "wamid." + base64.b64encode(blob).decode()


def text_message(body: str, message_id: str | None = None, sender: str = SENDER) -> dict[str, Any]:
    """One inbound text message item."""
    return {
        "from": sender,
        "id": message_id or new_wamid(),
        "timestamp": now_stamp(),
        "type": "text",
        "text": {"body": body},
    }


def envelope(
    messages: list[dict[str, Any]] | None = None,
    statuses: list[dict[str, Any]] | None = None,
    sender: str = SENDER,
    name: str = CONTACT_NAME,
) -> dict[str, Any]:
    """A webhook body with one entry and one change carrying `messages` and `statuses`."""
    value: dict[str, Any] = {
        "messaging_product": "whatsapp",
        "metadata": {"display_phone_number": "15550783881", "phone_number_id": "106540352242922"},
    }
    if messages is not None:
        value["contacts"] = [{"profile": {"name": name}, "wa_id": sender}]
        value["messages"] = messages
    if statuses is not None:
        value["statuses"] = statuses
    return {
        "object": "whatsapp_business_account",
        "entry": [{"id": "102290129340398", "changes": [{"field": "messages", "value": value}]}],
    }


def customer_webhook(
    body: str,
    *,
    phone: str | None = SENDER,
    user_id: str | None = BSUID,
    username: str | None = None,
    message_id: str | None = None,
) -> dict[str, Any]:
    """A text message as WhatsApp sends it since BSUIDs: `contacts[].user_id` and
    `from_user_id` carry the BSUID, and `from` / `wa_id` are there only when the number
    may be shown (`phone` None: a customer with a username, known by the BSUID alone)."""
    message: dict[str, Any] = text_message(body, message_id)
    contact: dict[str, Any] = {"profile": {"name": CONTACT_NAME}}
    del message["from"]
    if phone is not None:
        message["from"] = contact["wa_id"] = phone
    if user_id is not None:
        message["from_user_id"] = contact["user_id"] = user_id
    if username is not None:
        contact["profile"]["username"] = username
    payload = envelope([message])
    payload["entry"][0]["changes"][0]["value"]["contacts"] = [contact]
    return payload


def user_id_changed(previous: str, current: str, shape: str = "system") -> dict[str, Any]:
    """A changed BSUID as WhatsApp announces it: a `system` message of type
    `user_changed_user_id` on the messages field (Meta's reference), or the `user_id_update`
    field's item as first announced."""
    if shape == "system":
        system = {
            "body": "User changed their business-scoped user ID",
            "type": "user_changed_user_id",
            "user_id": current,
            "previous_user_id": previous,
        }
        message = {"id": new_wamid(), "timestamp": "1732500100", "type": "system"}
        payload = envelope([{**message, "system": system}])
        del payload["entry"][0]["changes"][0]["value"]["contacts"]  # system messages have none
        return payload
    value = {
        "messaging_product": "whatsapp",
        "metadata": {"display_phone_number": "15550783881", "phone_number_id": "106540352242922"},
        "user_id_update": [
            {"user_id": {"previous": previous, "current": current}, "timestamp": "1732500100"}
        ],
    }
    change = {"field": "user_id_update", "value": value}
    return {"object": "whatsapp_business_account", "entry": [{"id": "1", "changes": [change]}]}


def encode(payload: dict[str, Any]) -> bytes:
    """Serialise like Meta does: UTF-8 JSON, non-ASCII kept as-is."""
    return json.dumps(payload, ensure_ascii=False).encode()


def signature(body: bytes, secret: str = APP_SECRET) -> str:
    """X-Hub-Signature-256 for `body`."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def signed_headers(body: bytes, secret: str = APP_SECRET) -> dict[str, str]:
    """Headers of a genuine webhook POST."""
    return {"X-Hub-Signature-256": signature(body, secret), "Content-Type": "application/json"}


def status(
    outbound_id: str, state: str, timestamp: int, callback: str | None = None
) -> dict[str, Any]:
    """One delivery status item about a message we sent."""
    item: dict[str, Any] = {
        "id": outbound_id,
        "status": state,
        "timestamp": str(timestamp),
        "recipient_id": SENDER,
    }
    if callback is not None:
        item["biz_opaque_callback_data"] = callback
    return item


async def eventually(condition: Callable[[], bool], within: float = 15.0) -> None:
    """Poll `condition` until it holds; fail after `within` seconds (a deadlock guard only)."""
    with anyio.fail_after(within):
        while True:
            if condition():
                return
            await anyio.sleep(0.005)


def message_echoes(echoes: list[dict[str, Any]]) -> dict[str, Any]:
    """A coexistence webhook: what the business sent from the WhatsApp Business app, as the
    `smb_message_echoes` field's `message_echoes[]`."""
    value = {
        "messaging_product": "whatsapp",
        "metadata": {"display_phone_number": "15550783881", "phone_number_id": "106540352242922"},
        "message_echoes": echoes,
    }
    change = {"field": "smb_message_echoes", "value": value}
    return {"object": "whatsapp_business_account", "entry": [{"id": "1", "changes": [change]}]}


def text_echo(body: str, to: str = SENDER, message_id: str | None = None) -> dict[str, Any]:
    """One `message_echoes[]` item: a text the business sent to `to` from the app."""
    return {
        "from": "15550783881",
        "to": to,
        "id": message_id or new_wamid(),
        "timestamp": "1739321024",
        "type": "text",
        "text": {"body": body},
    }
