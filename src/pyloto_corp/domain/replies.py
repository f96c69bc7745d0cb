"""Deterministic Portuguese replies and the Graph API request bodies that carry them."""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
from typing import Any

from pyloto_corp.domain.identity import recipient_fields
from pyloto_corp.domain.records import InboundMessage

TEXT_BODY_LIMIT = 4096

# `biz_opaque_callback_data` is a keyed hash of the record id, of fixed length: Meta keeps at
# most 512 characters, and cutting a longer id would give two messages one key. The key only
# separates this use of the hash from others; ids are not secret.
REPLY_KEY_PREFIX = "pyloto1."
_REPLY_KEY = b"pyloto biz_opaque_callback_data"
REPLY_KEY_LENGTH = len(REPLY_KEY_PREFIX) + 43  # an unpadded base64url SHA-256

_GREETING = "Olá! Obrigado por falar com a gente."
_TEMPLATES: dict[str, str] = {
    "text": (
        f"{_GREETING} Recebemos sua mensagem e um de nossos atendentes vai responder "
        "em breve, dentro do nosso horário de atendimento."
    ),
    "media": (
        f"{_GREETING} Recebemos seu arquivo. Se quiser, conte em uma mensagem de texto "
        "como podemos ajudar."
    ),
    "audio": (
        f"{_GREETING} Recebemos seu áudio. Para agilizar, você pode escrever sua dúvida "
        "em uma mensagem de texto?"
    ),
    "location": f"{_GREETING} Recebemos sua localização e vamos considerá-la no atendimento.",
    "contacts": f"{_GREETING} Recebemos o contato que você compartilhou.",
    "choice": "Recebemos sua escolha: {choice}. Um de nossos atendentes vai continuar daqui.",
    "order": (f"{_GREETING} Recebemos seu pedido e vamos confirmar os detalhes com você em breve."),
    "unsupported": (
        "Desculpe, não conseguimos ler esse tipo de mensagem. Pode nos enviar sua dúvida em texto?"
    ),
}

_KIND_TEMPLATE = {
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


# Replies for an event LLM#1 detected before a later step failed.
_EVENT_TEMPLATES: dict[str, str] = {
    "greeting": f"{_GREETING} Como podemos ajudar você hoje?",
    "product_question": (
        f"{_GREETING} Recebemos sua dúvida sobre nossos produtos e um atendente vai "
        "responder em breve."
    ),
    "price": (
        f"{_GREETING} Recebemos seu pedido de valores; um atendente vai enviar as "
        "informações em breve."
    ),
    "scheduling": (
        f"{_GREETING} Recebemos seu pedido de agendamento; um atendente vai confirmar o "
        "horário com você em breve."
    ),
    "order_status": (
        f"{_GREETING} Recebemos sua pergunta sobre o pedido; vamos verificar e responder em breve."
    ),
    "support": (
        "Sentimos muito pelo transtorno. Recebemos sua mensagem e um atendente vai cuidar "
        "disso com prioridade."
    ),
    "human_handoff": "Certo! Vamos transferir você para um de nossos atendentes.",
    "opt_out": (
        "Tudo bem, você não vai mais receber mensagens nossas por aqui. Se precisar, é só chamar."
    ),
}


def template_for(message: InboundMessage, event: str | None = None) -> tuple[str, str]:
    """The template name and reply text: by the detected event if known, else by kind."""
    if event in _EVENT_TEMPLATES and message.kind in ("text", "interactive", "button"):
        return f"event:{event}", _EVENT_TEMPLATES[event]
    name = _KIND_TEMPLATE.get(message.kind, "unsupported")
    text = _TEMPLATES[name]
    if name == "choice":
        choice = (message.text or "").strip()
        if not choice:
            return "text", _TEMPLATES["text"]
        text = text.format(choice=f"“{choice[:100]}”")
    return name, text


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


def reply_body(message: InboundMessage, part: dict[str, Any]) -> dict[str, Any]:
    """The Graph API request body replying to `message` with a message `part` (its type
    and content); status webhooks echo its `reply_key` back."""
    return {
        "messaging_product": "whatsapp",
        "recipient_type": "individual",
        **recipient_fields(message),  # `to` (the number) or `recipient` (the BSUID)
        "context": {"message_id": message.message_id},
        **part,
        "biz_opaque_callback_data": reply_key(message.message_id),
    }
