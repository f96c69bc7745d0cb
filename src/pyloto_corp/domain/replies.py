"""Deterministic Portuguese replies and the Graph API request bodies that carry them."""

from __future__ import annotations

from typing import Any

from pyloto_corp.domain.records import InboundMessage

TEXT_BODY_LIMIT = 4096

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


def template_for(message: InboundMessage) -> tuple[str, str]:
    """The template name and the reply text for what the message is."""
    name = _KIND_TEMPLATE.get(message.kind, "unsupported")
    text = _TEMPLATES[name]
    if name == "choice":
        choice = (message.text or "").strip()
        if not choice:
            return "text", _TEMPLATES["text"]
        text = text.format(choice=f"“{choice[:100]}”")
    return name, text


def text_reply_body(message: InboundMessage, body: str, callback_data: str) -> dict[str, Any]:
    """The Graph API request body of a text reply to `message`."""
    return {
        "messaging_product": "whatsapp",
        "recipient_type": "individual",
        "to": message.sender,
        "context": {"message_id": message.message_id},
        "type": "text",
        "text": {"preview_url": False, "body": body[:TEXT_BODY_LIMIT]},
        "biz_opaque_callback_data": callback_data[:512],
    }
