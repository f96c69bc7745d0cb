"""Reply templates files: the shipped defaults, a business's partial override, and the
one-line errors that stop the start for a file that cannot be used."""

from __future__ import annotations

from pathlib import Path

import pytest

from pyloto_corp.adapters.reply_templates import default_templates_text, load_reply_templates
from pyloto_corp.bootstrap import bootstrap
from pyloto_corp.config import ConfigError, load_settings
from pyloto_corp.domain.records import InboundMessage
from pyloto_corp.domain.replies import TEMPLATE_PLACEHOLDERS, TEXT_BODY_LIMIT

NAME = "Oficina do Zé"
HOURS = "segunda a sábado, das 8h às 17h"


def message(kind: str, text: str | None = None) -> InboundMessage:
    """A minimal inbound message of `kind`."""
    return InboundMessage("wamid.TEMPLATES", "5511912345678", kind, 0, text=text)


def write(tmp_path: Path, text: str | bytes) -> Path:
    """A templates file holding `text` (bytes as given, text as UTF-8)."""
    path = tmp_path / "templates.toml"
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


def refusal(path: Path) -> str:
    """The one-line error loading `path` stops the start with."""
    with pytest.raises(ConfigError) as caught:
        load_reply_templates(path, NAME, HOURS)
    text = str(caught.value)
    assert "\n" not in text
    return text


def test_the_shipped_file_has_every_template_and_each_is_valid() -> None:
    """Without a file of the business's, every template comes from the shipped defaults."""
    templates = load_reply_templates(None, NAME, HOURS)
    assert set(templates.texts) == set(TEMPLATE_PLACEHOLDERS)
    assert "{business_name}" in default_templates_text()
    assert NAME in templates.render("welcome")


def test_a_file_overrides_only_the_keys_it_has(tmp_path: Path) -> None:
    """A partial file replaces those templates; every other one stays the shipped one."""
    path = write(
        tmp_path,
        'welcome = "Bem-vindo à {business_name}! Estamos abertos {business_hours}."\n'
        '[event]\nprice = "Os preços de {business_name} vão em seguida."\n',
    )
    shipped = load_reply_templates(None, NAME, HOURS)
    templates = load_reply_templates(path, NAME, HOURS)
    assert templates.for_message(message("request_welcome")) == (
        "welcome",
        f"Bem-vindo à {NAME}! Estamos abertos {HOURS}.",
    )
    assert templates.for_message(message("text"), "price")[1] == (
        f"Os preços de {NAME} vão em seguida."
    )
    changed = {"welcome", "event.price"}
    for key in set(TEMPLATE_PLACEHOLDERS) - changed:
        assert templates.texts[key] == shipped.texts[key], key


def test_the_choice_template_may_quote_the_choice(tmp_path: Path) -> None:
    """`choice` alone takes {choice}: the title the customer picked, quoted and cut."""
    path = write(tmp_path, 'choice = "{business_name} anotou: {choice}."\n')
    templates = load_reply_templates(path, NAME, HOURS)
    assert templates.for_message(message("button", "Agendar revisão"))[1] == (
        f"{NAME} anotou: “Agendar revisão”."
    )


def test_literal_braces_are_written_doubled(tmp_path: Path) -> None:
    """{{ and }} are a brace in the reply, not a placeholder."""
    path = write(tmp_path, 'text = "{{ {business_name} }}"\n')
    assert load_reply_templates(path, NAME, HOURS).render("text") == "{ " + NAME + " }"


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ('welcom = "Olá"\n', "key 'welcom': unknown key"),
        ('[event]\ngreetings = "Olá"\n', "key 'event.greetings': unknown key"),
        ('[other]\ntext = "Olá"\n', "key 'other': unknown key"),
        ("welcome = 3\n", "key 'welcome': must be text, not a number"),
        ('welcome = ["Olá"]\n', "key 'welcome': must be text, not a list"),
        ('event = "Olá"\n', "key 'event': must be a table ([event])"),
        ('welcome = "   "\n', "key 'welcome': empty text"),
        ('welcome = "Olá {nome}"\n', "key 'welcome': bad placeholder {nome}: use only"),
        ('welcome = "Olá {choice}"\n', "key 'welcome': bad placeholder {choice}"),
        ('welcome = "Olá {}"\n', "key 'welcome': bad placeholder {}"),
        ('welcome = "Olá {business_name!r}"\n', "bad placeholder {business_name!r}"),
        ('welcome = "Olá {business_name:>9}"\n', "bad placeholder {business_name:>9}"),
        ('welcome = "Olá {business_name"\n', "key 'welcome': bad placeholder: "),
        ('welcome = "Olá }"\n', "key 'welcome': bad placeholder: "),
        ('welcome = "Olá\n', "not valid TOML"),
    ],
)
def test_an_unusable_file_is_refused_naming_the_file_and_the_key(
    tmp_path: Path, content: str, expected: str
) -> None:
    """Unknown key, wrong type, empty text, bad placeholder, bad TOML: one line each."""
    path = write(tmp_path, content)
    text = refusal(path)
    assert text.startswith(f"REPLY_TEMPLATES_FILE {path}: ")
    assert expected in text


def test_a_template_over_whatsapps_text_limit_once_filled_in_is_refused(tmp_path: Path) -> None:
    """The limit counts the reply as sent: with the business's name in it."""
    fits = TEXT_BODY_LIMIT - len(NAME)
    assert load_reply_templates(
        write(tmp_path, f'text = "{"a" * fits}{{business_name}}"\n'), NAME, HOURS
    )
    path = write(tmp_path, f'text = "{"a" * (fits + 1)}{{business_name}}"\n')
    assert "key 'text': over WhatsApp's 4096-character text limit" in refusal(path)


def test_a_file_that_is_not_utf8_is_refused(tmp_path: Path) -> None:
    """A file saved as Latin-1 is refused as such, not read as garbled text."""
    path = write(tmp_path, 'welcome = "Olá, você"\n'.encode("latin-1"))
    assert f"REPLY_TEMPLATES_FILE {path}: not UTF-8" in refusal(path)


def test_a_utf8_file_with_a_byte_order_mark_is_read(tmp_path: Path) -> None:
    """Editors on Windows write a BOM; it is not part of the first key."""
    path = write(tmp_path, '\ufeffwelcome = "Olá da {business_name}"\n')
    assert load_reply_templates(path, NAME, HOURS).render("welcome") == f"Olá da {NAME}"


def test_a_missing_file_is_refused(tmp_path: Path) -> None:
    """A path that does not exist stops the start naming it."""
    path = tmp_path / "nowhere.toml"
    assert refusal(path).startswith(f"REPLY_TEMPLATES_FILE {path}: cannot read it")


def test_bootstrap_checks_the_file_at_start_up(tmp_path: Path) -> None:
    """The file is read and checked when the service is built, before any message."""
    path = write(tmp_path, 'welcome = ""\n')
    settings = load_settings(
        {"STATE_SQLITE_PATH": str(tmp_path / "db"), "REPLY_TEMPLATES_FILE": str(path)}
    )
    with pytest.raises(ConfigError, match="key 'welcome': empty text"):
        bootstrap(settings)
