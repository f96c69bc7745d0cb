"""Parse Meta webhook bodies into domain messages and statuses, tolerantly.

The envelope must be a WhatsApp business account webhook; inside it, every entry, change,
message and status is read on its own, so one odd item never rejects the batch (Meta would
retry the whole POST for 7 days). Unknown message types become `unsupported`.

Business-scoped user ids (BSUIDs): `contacts[].user_id` is always there, `messages[].from_user_id`
carries it, and `from` / `contacts[].wa_id` appear only when the customer's number may be
shown; `contacts[].profile.username` when they adopted a username; statuses add
`recipient_user_id`. A changed BSUID comes as a `system` message of type
`user_changed_user_id` (or `user_changed_number`, which regenerates the BSUID too) naming
`previous_user_id` and the new `user_id`, per Meta's system messages reference
(https://developers.facebook.com/documentation/business-messaging/whatsapp/webhooks/reference/messages/system/)
and changelog of 2026-08-11, which says `user_id_update` is no subscribable field
(https://developers.facebook.com/documentation/business-messaging/whatsapp/changelog/).
Payloads shaped as first announced, `field: "user_id_update"` with `value.user_id_update[]:
{user_id: {previous, current}, wa_id?, timestamp}`, are read too. Either is read leniently:
an odd one is skipped, never refused.

Coexistence numbers (a WhatsApp Business app number onboarded to Cloud API) report what the
business sends from the app or a linked device as `field: "smb_message_echoes"`, value
`message_echoes[]: {from: business number, to: customer, id, timestamp, type, <type>: {...}}`,
per Meta's smb_message_echoes webhook reference (mirrored at
https://support.chatarchitect.com/books/meta-whatsapp/page/smb-message-echoes-webhook-reference-developer-documentation,
"Updated: Oct 22, 2025"; https://dualhook.com/docs/webhook-smb-message-echoes shows edits and
revokes there too). They become messages of kind `echo` whose `sender` is the customer (`to`);
the BSUID is read from `to_user_id` or `recipient_user_id` (BSUID payloads name the recipient
so; YCloud's relay of the same webhook calls it `toUserId`,
https://docs.ycloud.com/en/api-reference/webhook-reference/whatsapp-smb-message-echoes.md),
and is the sender when no number is given. An unreadable echo is skipped.

Text that JSON allows but Python strings cannot carry on to UTF-8 (a lone surrogate escape
such as `"\\ud83d"`, from a client that cut an emoji in half) or bytes that are not UTF-8 are
read with the bad sequence replaced by U+FFFD: only a body that is not JSON at all is refused.
"""

from __future__ import annotations

import json
import logging
import re
from typing import Any, TypeVar

import msgspec

from pyloto_corp.domain.identity import is_bsuid
from pyloto_corp.domain.records import (
    InboundMessage,
    ParsedWebhook,
    Pricing,
    StatusUpdate,
    UserIdChange,
)
from pyloto_corp.domain.replies import status_key

log = logging.getLogger(__name__)
T = TypeVar("T")

KNOWN_KINDS = frozenset(
    {
        "text", "image", "video", "audio", "document", "sticker", "reaction", "location",
        "contacts", "order", "interactive", "button", "system", "unsupported", "edit",
        "revoke", "deleted", "ephemeral", "request_welcome",
    }
)  # fmt: skip
_MEDIA = ("image", "video", "audio", "document", "sticker")


class InvalidWebhook(Exception):
    """The body is not JSON or not a WhatsApp Business Account envelope."""


class _Change(msgspec.Struct):
    field: str = ""
    value: dict[str, Any] = {}


class _Entry(msgspec.Struct):
    changes: list[Any] = []


class _Envelope(msgspec.Struct):
    object: str
    # Entries and changes are read one by one: a malformed one is skipped, not the batch.
    entry: list[Any]


class _Profile(msgspec.Struct):
    name: str | None = None
    username: str | None = None


class _Contact(msgspec.Struct):
    wa_id: str | None = None
    user_id: str | None = None
    parent_user_id: str | None = None
    profile: _Profile | None = None


class _System(msgspec.Struct):
    type: str | None = None
    user_id: str | None = None
    previous_user_id: str | None = None


class _UserIds(msgspec.Struct):
    previous: str | None = None
    current: str | None = None


class _UserIdUpdate(msgspec.Struct):
    user_id: _UserIds | None = None


class _Metadata(msgspec.Struct):
    phone_number_id: str = ""
    display_phone_number: str = ""


class _Context(msgspec.Struct):
    id: str | None = None


class _Message(msgspec.Struct):
    id: str
    type: str = "unsupported"
    timestamp: str | int = 0
    # Sender: a phone-based wa_id; newer payloads may carry only a user id.
    from_: str | None = msgspec.field(default=None, name="from")
    from_user_id: str | None = None
    from_parent_user_id: str | None = None
    context: _Context | None = None


class _Echo(msgspec.Struct):
    id: str
    type: str = "unsupported"
    timestamp: str | int = 0
    # `from` is the business's own number; the customer is the recipient.
    to: str | None = None
    to_user_id: str | None = None
    recipient_user_id: str | None = None


class _Error(msgspec.Struct):
    code: int | None = None
    title: str | None = None


class _Status(msgspec.Struct):
    id: str
    status: str
    timestamp: str | int = 0
    biz_opaque_callback_data: str | None = None
    recipient_user_id: str | None = None
    errors: list[_Error] = []
    # Read on its own (see _pricing): an odd pricing object never costs the status.
    pricing: Any = None


_decoder = msgspec.json.Decoder(_Envelope)
# json.loads joins escaped surrogate pairs into one character: any surrogate left is alone.
_SURROGATE = re.compile("[\ud800-\udfff]")


def parse_webhook(body: bytes) -> ParsedWebhook:
    """Everything in a webhook body, or InvalidWebhook for a non-WhatsApp envelope."""
    try:
        envelope = _decoder.decode(body)
    except msgspec.ValidationError as error:
        raise InvalidWebhook(_reason(error)) from None
    except msgspec.DecodeError as error:
        envelope = _decode_repaired(body, error)
    except RecursionError:  # msgspec's guard against deeply nested JSON
        raise InvalidWebhook("body is nested too deeply") from None
    if envelope.object != "whatsapp_business_account":
        raise InvalidWebhook("'object' is not 'whatsapp_business_account'")
    parsed = ParsedWebhook()
    for raw_entry in envelope.entry:
        entry = _convert(raw_entry, _Entry)
        if entry is None:
            parsed.skipped += 1
            continue
        for raw_change in entry.changes:
            change = _convert(raw_change, _Change)
            if change is None:
                parsed.skipped += 1
            else:
                _read_change(change, parsed)
    return parsed


def _read_change(change: _Change, parsed: ParsedWebhook) -> None:
    """What a change of a field pyloto reads carries; other fields are accepted, ignored."""
    if change.field == "messages":
        _read_value(change.value, parsed)
    elif change.field == "user_id_update":
        _read_user_id_updates(change.value, parsed)
    elif change.field == "smb_message_echoes":
        _read_echoes(change.value, parsed)


def _decode_repaired(body: bytes, error: msgspec.DecodeError) -> _Envelope:
    """The envelope of a body msgspec refused, if it is JSON once bad text is replaced.

    msgspec refuses lone surrogate escapes and invalid UTF-8; the standard library reads
    both, and every string is then made valid (U+FFFD for each bad sequence). This path runs
    only for bodies msgspec refused, so the common case keeps msgspec's speed.
    """
    try:
        document = json.loads(body.decode("utf-8", errors="replace"))
    except (ValueError, RecursionError):
        raise InvalidWebhook(_reason(error)) from None
    try:
        return msgspec.convert(_valid_text(document), _Envelope)
    except msgspec.ValidationError as invalid:
        raise InvalidWebhook(_reason(invalid)) from None


def _valid_text(value: Any) -> Any:
    """`value` with every string (keys too) free of lone surrogates."""
    if isinstance(value, str):
        return _SURROGATE.sub("\ufffd", value)
    if isinstance(value, list):
        return [_valid_text(item) for item in value]
    if isinstance(value, dict):
        return {_valid_text(key): _valid_text(item) for key, item in value.items()}
    return value


def _reason(error: msgspec.DecodeError) -> str:
    if isinstance(error, msgspec.ValidationError):
        return f"not a WhatsApp webhook envelope: {error}"
    return "body is not valid JSON"


def _read_value(value: dict[str, Any], parsed: ParsedWebhook) -> None:
    metadata = _convert(value.get("metadata"), _Metadata) or _Metadata()
    contacts = _contacts(value.get("contacts"))
    for raw in _items(value.get("messages")):
        message = _message(raw, metadata, contacts)
        if message is None:
            parsed.skipped += 1
            continue
        parsed.messages.append(message)
        change = _user_id_change(raw) if message.kind == "system" else None
        if change is not None:
            parsed.user_id_changes.append(change)
    for raw in _items(value.get("statuses")):
        status = _status(raw)
        if status is None:
            parsed.skipped += 1
        else:
            parsed.statuses.append(status)
    parsed.errors.extend(item for item in _items(value.get("errors")) if isinstance(item, dict))


def _items(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _convert(raw: Any, kind: type[T]) -> T | None:
    if raw is None:
        return None
    try:
        return msgspec.convert(raw, kind, strict=False)
    except msgspec.ValidationError:
        return None


def _contacts(raw: Any) -> list[_Contact]:
    return [c for c in (_convert(item, _Contact) for item in _items(raw)) if c is not None]


def _contact_of(item: _Message, contacts: list[_Contact]) -> _Contact:
    """The contact a message is from: by number or BSUID, else the only one there is."""
    for contact in contacts:
        if (item.from_ and contact.wa_id == item.from_) or (
            item.from_user_id and contact.user_id == item.from_user_id
        ):
            return contact
    if len(contacts) == 1 and not (item.from_ and item.from_user_id):
        return contacts[0]  # a message naming one identifier; the contact names the other
    return _Contact()


def _text_or_none(value: str | None, limit: int = 256) -> str | None:
    return value[:limit] if value else None


def _user_id_change(raw: Any) -> UserIdChange | None:
    """The BSUID change a system message announces, if it names both ids."""
    system = _convert(raw.get("system") if isinstance(raw, dict) else None, _System)
    if system is None or system.type not in ("user_changed_user_id", "user_changed_number"):
        return None
    return _change(system.previous_user_id, system.user_id)


def _change(previous: str | None, current: str | None) -> UserIdChange | None:
    if previous is None or current is None or previous == current:
        return None
    if not (is_bsuid(previous) and is_bsuid(current)):
        return None
    return UserIdChange(previous=previous, current=current)


def _read_user_id_updates(value: dict[str, Any], parsed: ParsedWebhook) -> None:
    """`user_id_update[]` items as first announced: `{user_id: {previous, current}}`."""
    for raw in _items(value.get("user_id_update")):
        update = _convert(raw, _UserIdUpdate)
        ids = update.user_id if update is not None else None
        change = _change(ids.previous, ids.current) if ids is not None else None
        if change is None:
            log.warning(
                "webhook_user_id_update_unreadable",
                extra={"event": "webhook_user_id_update_unreadable"},
            )
            parsed.skipped += 1
        else:
            parsed.user_id_changes.append(change)


def _timestamp(value: str | int) -> int:
    try:
        seconds = int(value)
    except (TypeError, ValueError):
        return 0
    return seconds if 0 <= seconds < 2**63 else 0  # stores keep a signed 64-bit integer


def _message(raw: Any, metadata: _Metadata, contacts: list[_Contact]) -> InboundMessage | None:
    item = _convert(raw, _Message)
    if item is None or not item.id:
        log.warning("webhook_message_unreadable", extra={"event": "webhook_message_unreadable"})
        return None
    contact = _contact_of(item, contacts)
    user_id = item.from_user_id or contact.user_id
    user_id = user_id if is_bsuid(user_id) else None
    # The number when WhatsApp may show it, else the BSUID: whoever wrote, as before.
    sender = item.from_ or user_id or item.from_user_id or ""
    profile = contact.profile or _Profile()
    parent = item.from_parent_user_id or contact.parent_user_id
    kind = item.type if item.type in KNOWN_KINDS else "unsupported"
    body = raw.get(item.type) if isinstance(raw.get(item.type), dict) else {}
    text, details = _content(kind, body)
    return InboundMessage(
        message_id=item.id,
        sender=sender,
        kind=kind,
        timestamp=_timestamp(item.timestamp),
        phone_number_id=metadata.phone_number_id,
        text=text,
        contact_name=profile.name or None,
        context_message_id=item.context.id if item.context else None,
        details=details if kind == item.type else {"original_type": item.type[:64]},
        user_id=user_id,
        parent_user_id=parent if is_bsuid(parent) else None,
        username=_text_or_none(profile.username),
    )


def _read_echoes(value: dict[str, Any], parsed: ParsedWebhook) -> None:
    """`message_echoes[]`: what the business sent from the WhatsApp Business app."""
    metadata = _convert(value.get("metadata"), _Metadata) or _Metadata()
    for raw in _items(value.get("message_echoes")):
        echo = _echo(raw, metadata)
        if echo is None:
            log.warning("webhook_echo_unreadable", extra={"event": "webhook_echo_unreadable"})
            parsed.skipped += 1
        else:
            parsed.messages.append(echo)


def _echo(raw: Any, metadata: _Metadata) -> InboundMessage | None:
    """One echo as a message of kind `echo` from the customer it was sent to, or None when
    it names no id or no recipient."""
    item = _convert(raw, _Echo)
    if item is None or not item.id:
        return None
    user_id = next((u for u in (item.to_user_id, item.recipient_user_id) if is_bsuid(u)), None)
    sender = _customer_number(item.to) or user_id
    if not sender:
        return None
    echo_type = item.type[:64]
    body = raw.get(item.type)
    details: dict[str, Any] = {"echo_type": echo_type}
    # A text echo's body is `text`; any other type keeps its object (media ids, captions...).
    if isinstance(body, dict) and item.type != "text":
        details[echo_type] = body
    return InboundMessage(
        message_id=item.id,
        sender=sender,
        kind="echo",
        timestamp=_timestamp(item.timestamp),
        phone_number_id=metadata.phone_number_id,
        text=_str(body.get("body")) if item.type == "text" and isinstance(body, dict) else None,
        details=details,
        user_id=user_id,
    )


def _customer_number(value: str | None) -> str | None:
    """The recipient as a wa_id: an echo's `to` is the number as the business typed it
    (Meta's example has a `+`), where inbound `from` has digits only."""
    if not value:
        return None
    if is_bsuid(value):
        return value
    digits = "".join(char for char in value if char.isascii() and char.isdigit())
    return digits or None


def _content(kind: str, body: dict[str, Any]) -> tuple[str | None, dict[str, Any]]:
    """The readable text of a message and the few details later steps use."""
    if kind == "text":
        return _str(body.get("body")), {}
    if kind in _MEDIA:
        details: dict[str, Any] = {
            k: body[k] for k in ("id", "mime_type", "sha256") if isinstance(body.get(k), str)
        }
        if isinstance(body.get("voice"), bool):
            details["voice"] = body["voice"]  # a voice note recorded in WhatsApp
        return _str(body.get("caption")), details
    if kind == "interactive":
        reply = body.get(str(body.get("type"))) if isinstance(body.get("type"), str) else None
        reply = reply if isinstance(reply, dict) else {}
        details = {"type": body.get("type"), "id": _str(reply.get("id"))}
        return _str(reply.get("title")), details
    if kind == "button":
        return _str(body.get("text")), {"payload": _str(body.get("payload"))}
    if kind == "reaction":
        return _str(body.get("emoji")), {"message_id": _str(body.get("message_id"))}
    if kind == "location":
        return _str(body.get("name")), {}
    if kind in ("edit", "revoke"):
        return _edit_or_revoke(kind, body)
    return None, {}


def _edit_or_revoke(kind: str, body: dict[str, Any]) -> tuple[str | None, dict[str, Any]]:
    """An edit (the message's new text: a text body or a caption) or a deletion of the
    earlier message it names. Coexistence numbers only:
    https://developers.facebook.com/documentation/business-messaging/whatsapp/webhooks/reference/messages/edit
    (`edit: {original_message_id, message: {type, <type>: {...}}}`) and .../messages/revoke
    (`revoke: {original_message_id}`)."""
    details: dict[str, Any] = {}
    original = _str(body.get("original_message_id"))
    if original:
        details["original_message_id"] = original
    inner = body.get("message") if kind == "edit" else None
    if not isinstance(inner, dict) or not isinstance(inner.get("type"), str):
        return None, details
    content = inner.get(inner["type"])
    if inner["type"] not in ("text", *_MEDIA) or not isinstance(content, dict):
        return None, details
    details["type"] = inner["type"]
    text, _ = _content(inner["type"], content)
    return text, details


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _status(raw: Any) -> StatusUpdate | None:
    item = _convert(raw, _Status)
    if item is None or not item.id:
        log.warning("webhook_status_unreadable", extra={"event": "webhook_status_unreadable"})
        return None
    return StatusUpdate(
        outbound_message_id=item.id,
        status=item.status,
        timestamp=_timestamp(item.timestamp),
        # Statuses find their record by its reply key (older replies echo the bare id).
        callback_data=status_key(item.biz_opaque_callback_data)
        if item.biz_opaque_callback_data
        else None,
        errors=[{"code": e.code, "title": e.title} for e in item.errors],
        recipient_user_id=item.recipient_user_id if is_bsuid(item.recipient_user_id) else None,
        pricing=_pricing(item.pricing),
    )


# Pricing categories and models are short lowercase words; anything longer is cut.
_PRICING_TEXT = 48


def _pricing(raw: Any) -> Pricing | None:
    """A status's `pricing` object, or None when it has none or one that cannot be read.

    Meta's status webhook carries `pricing: {billable, pricing_model, category, type}`
    (https://developers.facebook.com/documentation/business-messaging/whatsapp/webhooks/reference/messages/status/).
    Since per-message pricing (2025-07-01,
    https://developers.facebook.com/docs/whatsapp/pricing/updates-to-pricing) `pricing_model`
    is `PMP` (`CBP` only for a free entry point conversation), `category` names the message
    (marketing, utility, authentication, authentication_international, service,
    referral_conversion, ...) and `type` is `regular` (charged) or `free_customer_service` /
    `free_entry_point`; newer webhook versions deprecate `billable`, so `type` decides when
    it is absent. Since 2026-10-01 service messages are charged too
    (https://developers.facebook.com/documentation/business-messaging/whatsapp/pricing,
    https://www.ycloud.com/blog/whatsapp-service-messages-24-hour-window-pricing): the
    webhook then says `billable: true` / `type: regular` for them, which is all this reads.
    """
    if not isinstance(raw, dict):
        return None
    category = raw.get("category")
    if not isinstance(category, str) or not category.strip():
        return None
    billable = raw.get("billable")
    if not isinstance(billable, bool):
        kind = raw.get("type")
        if not isinstance(kind, str):
            return None
        billable = kind.strip().lower() == "regular"
    model = raw.get("pricing_model")
    return Pricing(
        billable=billable,
        category=category.strip().lower()[:_PRICING_TEXT],
        model=model.strip().upper()[:_PRICING_TEXT] if isinstance(model, str) else "",
    )
