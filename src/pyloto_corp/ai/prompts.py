"""Prompts of the three LLM steps and of the media step's image description, in Portuguese,
in the business's voice."""

from __future__ import annotations

import base64
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from pyloto_corp.ai.schemas import EVENT_DESCRIPTIONS
from pyloto_corp.domain.records import Turn

Message = dict[str, str]
# A message whose content is a list of parts (text, image), as the image description sends.
PartsMessage = dict[str, Any]


@dataclass(frozen=True)
class BusinessProfile:
    """What the replies may say about the business (from configuration)."""

    name: str
    hours: str
    faq: str
    website: str | None


def _events() -> str:
    return "\n".join(f"- {name}: {text}" for name, text in EVENT_DESCRIPTIONS.items())


def detect_event(text: str, kind: str) -> list[Message]:
    """LLM#1: classify the customer's message."""
    system = (
        "Você classifica mensagens de clientes recebidas pelo WhatsApp de uma empresa "
        "brasileira. Escolha exatamente um evento da lista:\n"
        f"{_events()}\n"
        "Dê a confiança entre 0 e 1 e um resumo curto (até 200 caracteres) em português, "
        "sem nomes, telefones, e-mails, CPF, CNPJ ou endereços. Textos entre colchetes, "
        "como [phone] ou [cpf], são dados pessoais já ocultados."
    )
    return [
        {"role": "system", "content": system},
        {"role": "user", "content": f"Tipo da mensagem: {kind}\nMensagem:\n{text}"},
    ]


def draft_reply(
    text: str, event: str, summary: str, history: Sequence[Turn], business: BusinessProfile
) -> list[Message]:
    """LLM#2: write the reply, using the last turns of the conversation."""
    system = (
        f"Você é o atendimento inicial da empresa {business.name} no WhatsApp. Responda em "
        "português do Brasil, com cordialidade e objetividade, em no máximo 600 caracteres. "
        "Use só as informações abaixo; se não souber, diga que um atendente vai responder. "
        "Nunca invente preços, prazos ou links. Não peça dados pessoais sensíveis.\n"
        f"Horário de atendimento: {business.hours}\n"
        f"Perguntas frequentes:\n{business.faq or '(nenhuma)'}\n"
        f"Site: {business.website or '(nenhum)'}\n"
        "Se o cliente pedir para não receber mensagens, confirme sem insistir. Se pedir uma "
        "pessoa, diga que vai transferir para um atendente."
    )
    messages: list[Message] = [{"role": "system", "content": system}]
    for turn in history:
        role = "user" if turn.role == "customer" else "assistant"
        messages.append({"role": role, "content": turn.text})
    messages.append(
        {
            "role": "user",
            "content": f"{text}\n\n(evento detectado: {event}; resumo: {summary})",
        }
    )
    return messages


def choose_message_type(draft: str, event: str, business: BusinessProfile) -> list[Message]:
    """LLM#3: pick the WhatsApp message type that carries the reply best."""
    system = (
        "Escolha o tipo de mensagem do WhatsApp para enviar a resposta abaixo: "
        "'text' (padrão), 'buttons' (até 3 botões de resposta rápida, título até 20 "
        "caracteres), 'list' (até 10 opções, título até 24 caracteres, descrição até 72) ou "
        "'cta_url' (um botão com link, texto até 20 caracteres"
        f"{', apenas para ' + business.website if business.website else ', não disponível'}). "
        "Use botões ou lista só quando o cliente precisar escolher entre opções claras. "
        "Mantenha o texto da resposta no campo body (até 1024 caracteres para mensagens "
        "interativas). Campos que não se aplicam ao tipo escolhido ficam nulos."
    )
    return [
        {"role": "system", "content": system},
        {"role": "user", "content": f"Evento: {event}\nResposta:\n{draft}"},
    ]


def describe_image(image: bytes, mime_type: str, caption: str) -> list[PartsMessage]:
    """The media step: describe a customer's picture for the LLM steps, with its caption; the
    picture goes inline, as a `data:<mime>;base64,...` URL."""
    system = (
        "Você descreve imagens que clientes enviam pelo WhatsApp de uma empresa brasileira, "
        "para o atendimento. Em português do Brasil, em até 3 frases, diga só o que importa "
        "para atender: o produto ou serviço mostrado, valores, datas e itens de "
        "comprovantes, notas ou orçamentos, defeitos ou danos visíveis. Não transcreva "
        "dados pessoais (nomes, telefones, e-mails, CPF, CNPJ, endereços, números de "
        "documentos, cartões ou contas): diga apenas que aparecem. A legenda é do cliente; "
        "use-a para entender o que ele quer mostrar. Se a imagem não tiver relação com o "
        "atendimento, diga isso em poucas palavras."
    )
    media_type = mime_type.split(";", 1)[0].strip()
    data_url = f"data:{media_type};base64,{base64.b64encode(image).decode('ascii')}"
    text = f"Legenda do cliente: {caption}" if caption else "Sem legenda."
    parts: list[dict[str, Any]] = [
        {"type": "text", "text": text},
        {"type": "image_url", "image_url": {"url": data_url}},
    ]
    return [{"role": "system", "content": system}, {"role": "user", "content": parts}]
