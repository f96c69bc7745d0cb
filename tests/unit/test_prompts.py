"""Prompts of the three LLM steps: the event list, the business's voice, the conversation."""

from __future__ import annotations

import pytest

from pyloto_corp.ai import prompts
from pyloto_corp.ai.prompts import BusinessProfile
from pyloto_corp.ai.schemas import EVENT_DESCRIPTIONS, EventDetection
from pyloto_corp.domain.records import Turn

BUSINESS = BusinessProfile(
    name="Barbearia Navalha",
    hours="terça a sábado, das 9h às 19h",
    faq="Corte: R$ 50.\nBarba: R$ 30.",
    website="https://barbearia.example.com",
)
BARE = BusinessProfile(name="Loja", hours="sempre", faq="", website=None)


def test_detect_event_lists_every_event_and_carries_the_message() -> None:
    """LLM#1's system prompt names each event with its description; the user message carries
    the kind and the (already masked) text."""
    system, user = prompts.detect_event("Quanto custa? [cpf]", "text")
    assert system["role"] == "system"
    for name, description in EVENT_DESCRIPTIONS.items():
        assert f"- {name}: {description}" in system["content"]
    assert "[cpf]" in system["content"], "the model is told what placeholders mean"
    assert user == {
        "role": "user",
        "content": "Tipo da mensagem: text\nMensagem:\nQuanto custa? [cpf]",
    }


def test_the_event_list_matches_the_schema() -> None:
    """Every event the prompt offers is one the structured output accepts, and vice versa."""
    schema = EventDetection.model_json_schema()
    assert set(schema["properties"]["event"]["enum"]) == set(EVENT_DESCRIPTIONS)


def test_draft_reply_speaks_for_the_business() -> None:
    """LLM#2's system prompt has the business's name, hours, FAQ and site."""
    messages = prompts.draft_reply("Oi", "greeting", "Saudação.", [], BUSINESS)
    system = messages[0]["content"]
    assert messages[0]["role"] == "system"
    assert "Barbearia Navalha" in system
    assert "terça a sábado, das 9h às 19h" in system
    assert "Corte: R$ 50.\nBarba: R$ 30." in system
    assert "https://barbearia.example.com" in system
    assert "600 caracteres" in system


def test_draft_reply_without_faq_or_site_says_so() -> None:
    """An empty FAQ and no site are stated as such, not left blank."""
    system = prompts.draft_reply("Oi", "greeting", "", [], BARE)[0]["content"]
    assert "Perguntas frequentes:\n(nenhuma)" in system
    assert "Site: (nenhum)" in system


def test_draft_reply_replays_the_conversation_then_the_new_message() -> None:
    """Earlier turns come in order as user/assistant messages; the new message comes last,
    with the detected event and summary."""
    history = [
        Turn("customer", "Quanto custa o corte?", 1.0),
        Turn("business", "R$ 50. Quer agendar?", 2.0),
        Turn("customer", "Sim, sábado", 3.0),
        Turn("business", "Sábado às 10h está livre.", 4.0),
    ]
    messages = prompts.draft_reply(
        "Pode ser às 10h", "scheduling", "Confirma horário.", history, BUSINESS
    )
    assert messages[1:] == [
        {"role": "user", "content": "Quanto custa o corte?"},
        {"role": "assistant", "content": "R$ 50. Quer agendar?"},
        {"role": "user", "content": "Sim, sábado"},
        {"role": "assistant", "content": "Sábado às 10h está livre."},
        {
            "role": "user",
            "content": (
                "Pode ser às 10h\n\n(evento detectado: scheduling; resumo: Confirma horário.)"
            ),
        },
    ]


@pytest.mark.parametrize(
    ("business", "says"),
    [(BUSINESS, "apenas para https://barbearia.example.com"), (BARE, "não disponível")],
    ids=["with-site", "without-site"],
)
def test_choose_message_type_offers_the_cta_only_for_the_site(
    business: BusinessProfile, says: str
) -> None:
    """LLM#3 is told the limits of each type and that a CTA may only link to the site."""
    system, user = prompts.choose_message_type("Quer agendar?", "scheduling", business)
    assert says in system["content"]
    for limit in ("até 3 botões", "até 10 opções", "título até 20", "1024 caracteres"):
        assert limit in system["content"]
    assert user == {"role": "user", "content": "Evento: scheduling\nResposta:\nQuer agendar?"}


def test_describe_image_sends_the_picture_inline_with_its_caption() -> None:
    """The media step's prompt: the picture as a base64 data URL of its bytes (the MIME
    type's parameters dropped), the caption as text; the system prompt asks for what matters
    to customer service and forbids reading personal data out."""
    image = b"\x89PNG\r\n\x1a\n\x00\xff"
    system, user = prompts.describe_image(image, "image/png; charset=binary", "Chegou assim")
    assert system["role"] == "system"
    for topic in ("produto", "comprovantes", "danos", "CPF", "telefones", "nomes"):
        assert topic in system["content"]
    text, picture = user["content"]
    assert text == {"type": "text", "text": "Legenda do cliente: Chegou assim"}
    url = picture["image_url"]["url"]
    assert picture["type"] == "image_url"
    assert url == "data:image/png;base64,iVBORw0KGgoA/w=="
    (_, untitled) = prompts.describe_image(image, "image/jpeg", "")
    assert untitled["content"][0] == {"type": "text", "text": "Sem legenda."}
