"""WhatsApp's limits: LLM#3's choice becomes a valid message, repaired or downgraded to text,
and `problems` finds every limit a finished request body breaks."""

from __future__ import annotations

from typing import Any

import pytest

from pyloto_corp.ai import limits
from pyloto_corp.ai.limits import InvalidMessage, build_message, problems, shorten, text_message
from pyloto_corp.ai.schemas import MessageChoice
from tests.support.llm_outputs import choice

SITE_HOST = "barbearia.example.com"
HOSTS = frozenset({SITE_HOST})


def make_choice(
    kind: str = "text", body: str = "Olá! Como podemos ajudar?", **parts: Any
) -> MessageChoice:
    """A MessageChoice with the parts not given left null, as LLM#3 returns them."""
    return MessageChoice.model_validate(choice(kind, body, **parts))


def buttons(*titles: str) -> list[dict[str, str]]:
    """Reply buttons with ids b1, b2, ..."""
    return [{"id": f"b{n}", "title": title} for n, title in enumerate(titles, start=1)]


def rows(count: int, prefix: str = "r") -> list[dict[str, Any]]:
    """`count` list rows with distinct ids and titles."""
    return [
        {"id": f"{prefix}{n}", "title": f"Opção {n}", "description": None} for n in range(count)
    ]


def full_body(part: dict[str, Any]) -> dict[str, Any]:
    """A finished Graph API request around a message part."""
    return {"messaging_product": "whatsapp", "to": "5511987654321", **part}


# --- shorten and text ---------------------------------------------------------------------


def test_shorten_keeps_short_text_and_collapses_whitespace() -> None:
    """Text within the limit is kept, with runs of whitespace collapsed to one space."""
    assert shorten("  Agendar   horário ", 20) == "Agendar horário"


def test_shorten_cuts_long_text_with_an_ellipsis_within_the_limit() -> None:
    """Longer text is cut so that it, with a final ellipsis, fits the limit exactly or less."""
    cut = shorten("Quero agendar um horário para amanhã", 20)
    assert cut == "Quero agendar um ho…"
    assert len(cut) == 20


def test_text_message_keeps_a_normal_body() -> None:
    """A body within 4096 characters is sent stripped, without link previews."""
    assert text_message("  Olá!  ") == {
        "type": "text",
        "text": {"preview_url": False, "body": "Olá!"},
    }


@pytest.mark.parametrize("body", ["", "   \n "])
def test_text_message_refuses_an_empty_body(body: str) -> None:
    """WhatsApp rejects an empty text: no message is built."""
    with pytest.raises(InvalidMessage):
        text_message(body)


def test_a_long_text_is_cut_at_the_last_sentence_within_the_limit() -> None:
    """Over 4096 characters, the body ends at the last full sentence that fits."""
    sentence = "Esta é uma frase completa. "
    body = sentence * 200  # 5400 characters
    sent = text_message(body)["text"]["body"]
    assert len(sent) <= limits.TEXT_BODY
    assert sent.endswith("completa.")
    assert len(sent) > limits.TEXT_BODY // 2


def test_a_long_text_without_sentences_is_cut_with_an_ellipsis() -> None:
    """With no sentence end in the second half, the body is cut at 4096 with an ellipsis."""
    sent = text_message("a" * 5000)["text"]["body"]
    assert len(sent) == limits.TEXT_BODY
    assert sent.endswith("…")


# --- build_message: text and buttons --------------------------------------------------------


def test_a_text_choice_becomes_a_text_message() -> None:
    """Type `text`: the body as a text message, nothing repaired."""
    built = build_message(make_choice("text", "Abrimos às 9h."), HOSTS)
    assert built.message == {
        "type": "text",
        "text": {"preview_url": False, "body": "Abrimos às 9h."},
    }
    assert built.repairs == []
    assert built.downgraded_from is None


def test_a_blank_body_cannot_be_built() -> None:
    """A body of only whitespace is invalid whatever the type."""
    with pytest.raises(InvalidMessage):
        build_message(make_choice("buttons", "   ", buttons=buttons("Sim")), HOSTS)


def test_valid_buttons_are_built_as_they_are() -> None:
    """Up to three unique titled buttons with ids, header and footer: an interactive button
    message with nothing changed."""
    choice = make_choice(
        "buttons",
        "Quer agendar?",
        header="Barbearia",
        footer="Responda quando quiser",
        buttons=buttons("Sim", "Não", "Talvez"),
    )
    built = build_message(choice, HOSTS)
    assert built.repairs == []
    assert built.message == {
        "type": "interactive",
        "interactive": {
            "type": "button",
            "body": {"text": "Quer agendar?"},
            "header": {"type": "text", "text": "Barbearia"},
            "footer": {"text": "Responda quando quiser"},
            "action": {
                "buttons": [
                    {"type": "reply", "reply": {"id": "b1", "title": "Sim"}},
                    {"type": "reply", "reply": {"id": "b2", "title": "Não"}},
                    {"type": "reply", "reply": {"id": "b3", "title": "Talvez"}},
                ]
            },
        },
    }
    assert problems(full_body(built.message)) == []


def test_long_titles_header_and_footer_are_shortened_and_recorded() -> None:
    """Over-long button title, header and footer are cut to their limits, each repair noted."""
    choice = make_choice(
        "buttons",
        "Quer agendar?",
        header="H" * 70,
        footer="F" * 70,
        buttons=buttons("Quero agendar um horário para amanhã", "Não"),
    )
    built = build_message(choice, HOSTS)
    interactive = built.message["interactive"]
    assert len(interactive["header"]["text"]) == limits.HEADER
    assert len(interactive["footer"]["text"]) == limits.FOOTER
    assert len(interactive["action"]["buttons"][0]["reply"]["title"]) == limits.BUTTON_TITLE
    assert sorted(built.repairs) == [
        "button title shortened to 20",
        "footer shortened to 60",
        "header shortened to 60",
    ]
    assert built.downgraded_from is None
    assert problems(full_body(built.message)) == []


def test_blank_header_and_footer_are_left_out() -> None:
    """A header or footer of only spaces is not sent at all."""
    built = build_message(
        make_choice("buttons", "Quer agendar?", header="  ", footer=" ", buttons=buttons("Sim")),
        HOSTS,
    )
    assert "header" not in built.message["interactive"]
    assert "footer" not in built.message["interactive"]


@pytest.mark.parametrize(
    "ids",
    [["a", "a"], [" ", "b"], ["x" * 300, "b"]],
    ids=["duplicate", "blank", "too-long"],
)
def test_bad_button_ids_are_replaced_by_numbered_ones(ids: list[str]) -> None:
    """Duplicate, blank or over-long ids are all replaced by button-1, button-2."""
    choice = make_choice(
        "buttons",
        "Escolha:",
        buttons=[{"id": i, "title": t} for i, t in zip(ids, ["Sim", "Não"], strict=True)],
    )
    built = build_message(choice, HOSTS)
    replies = [b["reply"] for b in built.message["interactive"]["action"]["buttons"]]
    assert [r["id"] for r in replies] == ["button-1", "button-2"]
    assert "button ids replaced" in built.repairs
    assert built.message["type"] == "interactive"


def test_padded_button_ids_are_only_stripped() -> None:
    """Spaces around an otherwise good id are dropped; the id itself is kept."""
    choice = make_choice("buttons", "Escolha:", buttons=[{"id": " sim ", "title": "Sim"}])
    built = build_message(choice, HOSTS)
    assert built.message["interactive"]["action"]["buttons"][0]["reply"]["id"] == "sim"
    assert built.repairs == []


@pytest.mark.parametrize(
    ("titles", "reason"),
    [
        ((), "0 buttons (1 to 3 allowed)"),
        (("Um", "Dois", "Três", "Quatro"), "4 buttons (1 to 3 allowed)"),
        (("   ",), "0 buttons (1 to 3 allowed)"),
        (("Agendar horário amanhã cedo", "Agendar horário amanhã tarde"), "not unique"),
    ],
    ids=["none", "four", "only-blank", "same-after-shortening"],
)
def test_buttons_that_cannot_be_repaired_are_downgraded_to_text(
    titles: tuple[str, ...], reason: str
) -> None:
    """No buttons, more than three, or titles equal once shortened: the body goes as text."""
    built = build_message(make_choice("buttons", "Escolha:", buttons=buttons(*titles)), HOSTS)
    assert built.message == {"type": "text", "text": {"preview_url": False, "body": "Escolha:"}}
    assert built.downgraded_from == "buttons"
    assert len(built.repairs) == 1
    assert reason in built.repairs[0]


def test_null_buttons_are_downgraded_to_text() -> None:
    """`buttons` chosen without any buttons at all: text."""
    built = build_message(make_choice("buttons", "Escolha:"), HOSTS)
    assert built.downgraded_from == "buttons"


def test_an_interactive_body_over_1024_is_downgraded_to_text() -> None:
    """Interactive bodies stop at 1024 characters; a longer one is sent as text, whole."""
    body = "Palavra " * 200  # 1600 characters
    built = build_message(make_choice("buttons", body, buttons=buttons("Sim")), HOSTS)
    assert built.downgraded_from == "buttons"
    assert built.repairs == ["body over 1024 characters"]
    assert built.message["text"]["body"] == body.strip()


# --- build_message: lists -------------------------------------------------------------------


def test_a_single_untitled_section_list_is_built_without_a_section_title() -> None:
    """One section with no title: no title is sent; the default list button is 'Ver opções';
    a row description is kept."""
    choice = make_choice(
        "list",
        "Escolha um serviço:",
        sections=[
            {
                "title": None,
                "rows": [
                    {"id": "corte", "title": "Corte", "description": "R$ 50"},
                    {"id": "barba", "title": "Barba", "description": "  "},
                ],
            }
        ],
    )
    built = build_message(choice, HOSTS)
    assert built.repairs == []
    action = built.message["interactive"]["action"]
    assert built.message["interactive"]["type"] == "list"
    assert action == {
        "button": "Ver opções",
        "sections": [
            {
                "rows": [
                    {"id": "corte", "title": "Corte", "description": "R$ 50"},
                    {"id": "barba", "title": "Barba"},
                ]
            }
        ],
    }
    assert problems(full_body(built.message)) == []


def test_several_sections_all_get_titles_and_long_parts_are_shortened() -> None:
    """With several sections each needs a title ('Opções n' when missing); long section and
    row titles, descriptions and the list button are shortened, each repair noted; sections
    without rows are dropped."""
    choice = make_choice(
        "list",
        "Horários:",
        list_button_text="Ver todos os horários disponíveis",
        sections=[
            {"title": "Horários da manhã de sábado e domingo", "rows": rows(2, "m")},
            {"title": None, "rows": rows(1, "t")},
            {"title": "Vazia", "rows": []},
            {
                "title": "Noite",
                "rows": [{"id": "n", "title": "T" * 30, "description": "D" * 80}],
            },
        ],
    )
    built = build_message(choice, HOSTS)
    sections = built.message["interactive"]["action"]["sections"]
    assert [s["title"] for s in sections] == ["Horários da manhã de sá…", "Opções 2", "Noite"]
    assert len(sections[0]["title"]) <= limits.SECTION_TITLE
    last_row = sections[2]["rows"][0]
    assert len(last_row["title"]) == limits.ROW_TITLE
    assert len(last_row["description"]) == limits.ROW_DESCRIPTION
    assert len(built.message["interactive"]["action"]["button"]) == limits.LIST_BUTTON
    assert sorted(built.repairs) == [
        "list button shortened to 20",
        "row description shortened to 72",
        "row title shortened to 24",
        "section title shortened to 24",
    ]
    assert problems(full_body(built.message)) == []


def test_duplicate_row_ids_are_replaced_across_sections() -> None:
    """Row ids must be unique in the whole list: duplicates make every id row-n."""
    choice = make_choice(
        "list",
        "Escolha:",
        sections=[
            {"title": "A", "rows": rows(1)},
            {"title": "B", "rows": rows(1)},  # the same id r0 again
        ],
    )
    built = build_message(choice, HOSTS)
    ids = [r["id"] for s in built.message["interactive"]["action"]["sections"] for r in s["rows"]]
    assert ids == ["row-1", "row-2"]
    assert built.repairs == ["row ids replaced"]


@pytest.mark.parametrize(
    "sections",
    [None, [], [{"title": "Vazia", "rows": []}], [{"title": "A", "rows": rows(11)}]],
    ids=["null", "none", "only-empty", "eleven-rows"],
)
def test_lists_without_rows_or_over_ten_rows_are_downgraded(
    sections: list[dict[str, Any]] | None,
) -> None:
    """A list needs 1 to 10 rows; otherwise its body is sent as text."""
    built = build_message(make_choice("list", "Escolha:", sections=sections), HOSTS)
    assert built.downgraded_from == "list"
    assert built.message["type"] == "text"
    assert "rows" in built.repairs[0]


# --- build_message: CTA URL -----------------------------------------------------------------


def test_a_cta_to_the_business_site_is_built() -> None:
    """An https link to the business's host, with its display text."""
    url = f"https://{SITE_HOST}/agendar"
    choice = make_choice("cta_url", "Agende online:", cta_display_text="Agendar", cta_url=url)
    built = build_message(choice, HOSTS)
    assert built.message["interactive"]["type"] == "cta_url"
    assert built.message["interactive"]["action"] == {
        "name": "cta_url",
        "parameters": {"display_text": "Agendar", "url": url},
    }
    assert problems(full_body(built.message)) == []


def test_a_cta_without_display_text_says_abrir_and_a_long_one_is_shortened() -> None:
    """The display text defaults to 'Abrir'; over 20 characters it is shortened."""
    url = f"https://{SITE_HOST}/"
    plain = build_message(make_choice("cta_url", "Site:", cta_url=url), HOSTS)
    assert plain.message["interactive"]["action"]["parameters"]["display_text"] == "Abrir"
    long = build_message(
        make_choice("cta_url", "Site:", cta_url=url, cta_display_text="Abrir o site da barbearia"),
        HOSTS,
    )
    assert len(long.message["interactive"]["action"]["parameters"]["display_text"]) == 20
    assert long.repairs == ["CTA text shortened to 20"]


@pytest.mark.parametrize(
    ("url", "hosts"),
    [
        (f"http://{SITE_HOST}/", HOSTS),
        ("https://outro.example.net/", HOSTS),
        (f"https://{SITE_HOST}.evil.example/", HOSTS),
        (None, HOSTS),
        (f"https://{SITE_HOST}/", frozenset()),
    ],
    ids=["http", "other-host", "lookalike-host", "no-url", "no-site-configured"],
)
def test_a_cta_anywhere_but_the_business_site_is_downgraded(
    url: str | None, hosts: frozenset[str]
) -> None:
    """Only https links to the configured site's host are sent as a button; anything else
    (or no site configured) sends the body as text."""
    built = build_message(make_choice("cta_url", "Veja:", cta_url=url), hosts)
    assert built.downgraded_from == "cta_url"
    assert built.message == {"type": "text", "text": {"preview_url": False, "body": "Veja:"}}
    assert built.repairs == ["CTA URL is not an https link to the business's own site"]


# --- problems -------------------------------------------------------------------------------


def interactive(kind: str, action: dict[str, Any], **parts: Any) -> dict[str, Any]:
    """A finished interactive request body."""
    return full_body(
        {
            "type": "interactive",
            "interactive": {"type": kind, "body": {"text": "Olá"}, **parts, "action": action},
        }
    )


def button(title: Any = "Sim", id_: Any = "b1") -> dict[str, Any]:
    """One reply button of a finished body."""
    return {"type": "reply", "reply": {"id": id_, "title": title}}


def test_a_valid_text_body_has_no_problems() -> None:
    """A text of 1 to 4096 characters is fine."""
    assert problems(full_body(text_message("Olá"))) == []


def _template(name: str, language: str) -> dict[str, Any]:
    return {"type": "template", "template": {"name": name, "language": {"code": language}}}


@pytest.mark.parametrize(
    ("body", "found"),
    [
        (full_body({"type": "text", "text": {"body": ""}}), ["text body length"]),
        (full_body({"type": "text", "text": {"body": "a" * 4097}}), ["text body length"]),
        (full_body({"type": "text"}), ["text body length"]),
        (full_body({"type": "image"}), ["unsupported type 'image'"]),
        (interactive("carousel", {}), ["unsupported interactive type 'carousel'"]),
        (full_body(_template("retomar", "pt_BR")), []),
        (full_body(_template("", "pt_BR")), ["template name length"]),
        (full_body({"type": "template", "template": {"name": "x"}}), ["template language code"]),
    ],
    ids=[
        "empty-text",
        "long-text",
        "no-text",
        "image",
        "carousel",
        "template",
        "no-name",
        "no-lang",
    ],
)
def test_problems_of_text_and_unknown_types(body: dict[str, Any], found: list[str]) -> None:
    """Empty or over-long texts, unsupported types and interactive kinds are named."""
    assert problems(body) == found


def test_problems_of_interactive_body_header_and_footer() -> None:
    """An empty interactive body, and a header or footer over 60, are each named."""
    body = interactive(
        "button",
        {"buttons": [button()]},
        header={"type": "text", "text": "H" * 61},
        footer={"text": "F" * 61},
    )
    body["interactive"]["body"]["text"] = ""
    assert problems(body) == ["interactive body length", "header length", "footer length"]
    body["interactive"]["body"]["text"] = "x" * 1025
    assert "interactive body length" in problems(body)


@pytest.mark.parametrize(
    ("action", "found"),
    [
        ({"buttons": [button(), button("Não", "b2")]}, []),
        ({"buttons": []}, ["button count"]),
        ({}, ["button count"]),
        ({"buttons": [button(f"T{n}", f"b{n}") for n in range(4)]}, ["button count"]),
        ({"buttons": [button("T" * 21)]}, ["button title or id"]),
        ({"buttons": [button("")]}, ["button title or id"]),
        ({"buttons": [button(id_=None)]}, ["button title or id"]),
        ({"buttons": [button(id_="i" * 257)]}, ["button title or id"]),
    ],
    ids=["ok", "none", "missing", "four", "long-title", "empty-title", "no-id", "long-id"],
)
def test_problems_of_buttons(action: dict[str, Any], found: list[str]) -> None:
    """1 to 3 buttons, each with a 1-20 character title and a 1-256 character id."""
    assert problems(interactive("button", action)) == found


def row(title: Any = "Corte", id_: Any = "r1", **extra: Any) -> dict[str, Any]:
    """One row of a finished list."""
    return {"id": id_, "title": title, **extra}


@pytest.mark.parametrize(
    ("action", "found"),
    [
        ({"button": "Ver", "sections": [{"rows": [row(description="R$ 50")]}]}, []),
        ({"button": "Ver", "sections": []}, ["list rows"]),
        (
            {"button": "Ver", "sections": [{"rows": [row(id_=f"r{n}") for n in range(11)]}]},
            ["list rows"],
        ),
        ({"sections": [{"rows": [row()]}]}, ["list button"]),
        ({"button": "B" * 21, "sections": [{"rows": [row()]}]}, ["list button"]),
        (
            {"button": "Ver", "sections": [{"rows": [row("T" * 25)]}]},
            ["row title, description or id"],
        ),
        (
            {"button": "Ver", "sections": [{"rows": [row(description="D" * 73)]}]},
            ["row title, description or id"],
        ),
        (
            {"button": "Ver", "sections": [{"rows": [row(id_="")]}]},
            ["row title, description or id"],
        ),
    ],
    ids=[
        "ok",
        "no-rows",
        "eleven-rows",
        "no-button",
        "long-button",
        "long-row-title",
        "long-description",
        "empty-id",
    ],
)
def test_problems_of_lists(action: dict[str, Any], found: list[str]) -> None:
    """1 to 10 rows, a 1-20 character button, rows with titles ≤ 24, descriptions ≤ 72, ids."""
    assert problems(interactive("list", action)) == found


@pytest.mark.parametrize(
    ("parameters", "found"),
    [
        ({"display_text": "Abrir", "url": "https://a.example/"}, []),
        ({"display_text": "Abrir", "url": "http://a.example/"}, ["cta parameters"]),
        ({"display_text": "A" * 21, "url": "https://a.example/"}, ["cta parameters"]),
        ({"url": "https://a.example/"}, ["cta parameters"]),
        ({"display_text": "Abrir"}, ["cta parameters"]),
    ],
    ids=["ok", "http", "long-text", "no-text", "no-url"],
)
def test_problems_of_cta_urls(parameters: dict[str, Any], found: list[str]) -> None:
    """A CTA needs a 1-20 character display text and an https URL."""
    action = {"name": "cta_url", "parameters": parameters}
    assert problems(interactive("cta_url", action)) == found
