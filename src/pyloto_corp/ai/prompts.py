"""Prompts of the three LLM steps, in Portuguese, in the business's voice."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from pyloto_corp.ai.schemas import EVENT_DESCRIPTIONS
from pyloto_corp.domain.records import Turn

Message = dict[str, str]


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
