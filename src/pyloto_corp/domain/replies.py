"""Deterministic replies (templates in the business's voice) and the Graph API request
bodies that carry them."""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import string
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pyloto_corp.domain.identity import recipient_fields
from pyloto_corp.domain.intents import TEMPLATED_EVENTS
from pyloto_corp.domain.records import InboundMessage

TEXT_BODY_LIMIT = 4096

# `biz_opaque_callback_data` is a keyed hash of the record id, of fixed length: Meta keeps at
# most 512 characters, and cutting a longer id would give two messages one key. The key only
# separates this use of the hash from others; ids are not secret.
REPLY_KEY_PREFIX = "pyloto1."
_REPLY_KEY = b"pyloto biz_opaque_callback_data"
REPLY_KEY_LENGTH = len(REPLY_KEY_PREFIX) + 43  # an unpadded base64url SHA-256

# The fallback templates, by key, and the placeholders each may use. Their texts are not
# here: the Portuguese defaults ship as a data file and a business may override any of them
# (bootstrap reads both and hands the result in as a `ReplyTemplates`).
BUSINESS_PLACEHOLDERS = frozenset({"business_name", "business_hours"})
EVENT_KEY_PREFIX = "event."
TEMPLATE_PLACEHOLDERS: dict[str, frozenset[str]] = {
    key: BUSINESS_PLACEHOLDERS
    for key in (
        "welcome",
        "text",
        "media",
        "audio",
        "location",
        "contacts",
        "order",
        "unsupported",
        # Replies for an event LLM#1 detected before a later step failed.
        *(EVENT_KEY_PREFIX + event for event in TEMPLATED_EVENTS),
    )
}
TEMPLATE_PLACEHOLDERS["choice"] = BUSINESS_PLACEHOLDERS | {"choice"}
# A choice's title is quoted in its reply, cut to this many characters.
CHOICE_CHARACTERS = 100
# The longest `{choice}` a template is filled with: the cut title and its quotes.
_LONGEST_CHOICE = "“" + "W" * CHOICE_CHARACTERS + "”"

_KIND_TEMPLATE = {
    "request_welcome": "welcome",
    "text": "text",
    "image": "media",
    "video": "media",
    "document": "media",
    "sticker": "media",
    "audio": "audio",
    "location": "location",
    "contacts": "contacts",
    "interactive": "choice",
    "button": "choice",
    "order": "order",
}


def template_problem(key: str, text: object, business_name: str, business_hours: str) -> str | None:
    """Why `text` cannot be the template `key` (None when it can): an unknown key, not a
    string, empty, a placeholder other than the key's own (`{business_name}`, ...), or
    longer than WhatsApp's text limit once filled in with the business's values."""
    allowed = TEMPLATE_PLACEHOLDERS.get(key)
    if allowed is None:
        return "unknown key"
    if not isinstance(text, str):
        return f"must be text, not {_VALUE_KINDS.get(type(text).__name__, type(text).__name__)}"
    if not text.strip():
        return "empty text"
    problem = _placeholder_problem(text, allowed)
    if problem is not None:
        return problem
    filled = text.format(
        business_name=business_name, business_hours=business_hours, choice=_LONGEST_CHOICE
    )
    if len(filled) > TEXT_BODY_LIMIT:
        return (
            f"over WhatsApp's {TEXT_BODY_LIMIT}-character text limit once filled in "
            f"({len(filled)} characters)"
        )
    return None


# How a value that is not text is named in an error (TOML's and JSON's kinds of value).
_VALUE_KINDS = {
    "int": "a number",
    "float": "a number",
    "bool": "true/false",
    "list": "a list",
    "dict": "a table",
    "NoneType": "nothing",
}


def _placeholder_problem(text: str, allowed: frozenset[str]) -> str | None:
    """What is wrong with the `{...}` of `text`: an unmatched brace, or a placeholder that
    is not one of `allowed` (bare, with no conversion or format spec)."""
    names = ", ".join("{" + name + "}" for name in sorted(allowed))
    try:
        parts = list(string.Formatter().parse(text))
    except ValueError as error:  # an unmatched brace
        return f"bad placeholder: {error} (write a literal brace as {{{{ or }}}})"
    for _, name, spec, conversion in parts:
        if name is not None and (name not in allowed or spec or conversion):
            written = name + (f"!{conversion}" if conversion else "") + (f":{spec}" if spec else "")
            return f"bad placeholder {{{written}}}: use only {names}"
    return None


@dataclass(frozen=True)
class ReplyTemplates:
    """Every fallback template's text (placeholders unfilled) and the business's values
    that fill them; `template_problem` holds for each text."""

    texts: Mapping[str, str]
    business_name: str
    business_hours: str

    def render(self, key: str, choice: str = "") -> str:
        """The reply of template `key`, in the business's voice."""
        return self.texts[key].format(
            business_name=self.business_name, business_hours=self.business_hours, choice=choice
        )

    def for_message(self, message: InboundMessage, event: str | None = None) -> tuple[str, str]:
        """The template name and reply text: by the detected event if known, else by kind."""
        event_key = f"{EVENT_KEY_PREFIX}{event}"
        if event_key in self.texts and message.kind in ("text", "interactive", "button"):
            return f"event:{event}", self.render(event_key)
        name = _KIND_TEMPLATE.get(message.kind, "unsupported")
        if name != "choice":
            return name, self.render(name)
        choice = (message.text or "").strip()
        if not choice:
            return "text", self.render("text")
        return name, self.render(name, choice=f"“{choice[:CHOICE_CHARACTERS]}”")


@functools.lru_cache(maxsize=4096)  # a record's key is asked for at most of its transitions
def reply_key(message_id: str) -> str:
    """The `biz_opaque_callback_data` of the reply to record `message_id`."""
    digest = hmac.new(_REPLY_KEY, message_id.encode("utf-8", "surrogatepass"), hashlib.sha256)
    return REPLY_KEY_PREFIX + base64.urlsafe_b64encode(digest.digest()).decode().rstrip("=")


def status_key(callback_data: str) -> str:
    """The reply key a status webhook's callback data names.

    Replies sent before callback data was hashed echo the record id itself: it is hashed
    here, so both kinds of status find their record by the same key.
    """
    if len(callback_data) == REPLY_KEY_LENGTH and callback_data.startswith(REPLY_KEY_PREFIX):
        return callback_data
    return reply_key(callback_data)


# Graph API request bodies are WhatsApp's JSON shape: they are built and checked as such.
def text_reply_body(message: InboundMessage, body: str) -> dict[str, Any]:
    """The Graph API request body of a text reply to `message`."""
    part = {"type": "text", "text": {"preview_url": False, "body": body[:TEXT_BODY_LIMIT]}}
    return reply_body(message, part)


def reply_body(message: InboundMessage, part: dict[str, Any], quote: bool = True) -> dict[str, Any]:
    """The Graph API request body replying to `message` with a message `part` (its type
    and content), quoting it unless `quote` is False; status webhooks echo its `reply_key`
    back."""
    context = {"context": {"message_id": message.message_id}} if quote else {}
    return {
        "messaging_product": "whatsapp",
        "recipient_type": "individual",
        **recipient_fields(message),  # `to` (the number) or `recipient` (the BSUID)
        **context,
        **part,
        "biz_opaque_callback_data": reply_key(message.message_id),
    }


def agent_reply_body(message: InboundMessage, body: str) -> dict[str, Any]:
    """An agent's text to the customer `message` names (a record pyloto made for the
    reply: there is no customer message of its own to quote)."""
    part = {"type": "text", "text": {"preview_url": False, "body": body}}
    return reply_body(message, part, quote=False)


def template_reply_body(message: InboundMessage, name: str, language: str) -> dict[str, Any]:
    """The approved template `name` in `language` (a Graph `type: template` message), the
    only message WhatsApp delivers outside the customer-service window.
    https://developers.facebook.com/docs/whatsapp/cloud-api/guides/send-message-templates"""
    part = {"type": "template", "template": {"name": name, "language": {"code": language}}}
    return reply_body(message, part, quote=False)


def is_template(body: dict[str, Any] | None) -> bool:
    """Whether a Graph request body sends an approved template."""
    return body is not None and body.get("type") == "template"
