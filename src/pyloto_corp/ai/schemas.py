"""Structured outputs of the LLM steps and the media step (pydantic models sent as JSON
schemas)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

# LLM#1's events live in the domain: the reply templates key on them too.
from pyloto_corp.domain.intents import Event

EVENT_DESCRIPTIONS: dict[str, str] = {
    "greeting": "saudação sem outro pedido (oi, bom dia)",
    "product_question": "dúvida sobre produto ou serviço",
    "price": "pergunta sobre preço, orçamento, formas de pagamento",
    "scheduling": "quer marcar, remarcar ou cancelar horário ou visita",
    "order_status": "pergunta sobre pedido, entrega ou prazo",
    "support": "reclamação, problema ou pedido de suporte",
    "human_handoff": "pede para falar com uma pessoa",
    "opt_out": "pede para não receber mais mensagens",
    "spam": "propaganda, golpe ou conteúdo sem relação com o negócio",
    "other": "qualquer outra coisa",
}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class EventDetection(_Strict):
    """LLM#1: what the customer wants."""

    event: Event
    confidence: float = Field(ge=0, le=1)
    summary: str = Field(max_length=200, description="Resumo curto, sem dados pessoais.")


class ReplyDraft(_Strict):
    """LLM#2: the reply, in Portuguese, in the business's voice."""

    text: str = Field(min_length=1)


class Button(_Strict):
    """A reply button."""

    id: str
    title: str


class Row(_Strict):
    """A row of a list message."""

    id: str
    title: str
    description: str | None


class Section(_Strict):
    """A section of a list message."""

    title: str | None
    rows: list[Row]


class MessageChoice(_Strict):
    """LLM#3: which WhatsApp message carries the reply, with its parts."""

    type: Literal["text", "buttons", "list", "cta_url"]
    body: str = Field(min_length=1)
    header: str | None
    footer: str | None
    buttons: list[Button] | None
    list_button_text: str | None
    sections: list[Section] | None
    cta_display_text: str | None
    cta_url: str | None


class ImageDescription(_Strict):
    """The media step: what a customer's picture shows, for the LLM steps to read."""

    description: str = Field(
        min_length=1, description="Descrição curta em português, sem dados pessoais."
    )
