"""redact_text and the masks: personal data goes, ordinary text stays readable."""

from __future__ import annotations

import re

import pytest

from pyloto_corp.domain.privacy import mask_name, mask_phone, message_ref, redact_text


def digits(text: str) -> str:
    """Only the digits of `text`."""
    return re.sub(r"\D", "", text)


@pytest.mark.parametrize(
    "phone",
    [
        "+55 (11) 91234-5678",
        "+55 11 91234-5678",
        "+55 11 91234 5678",
        "+55-11-91234-5678",
        "+55(11)91234-5678",
        "+5511912345678",
        "55 11 91234-5678",
        "5511912345678",
        "(11) 91234-5678",
        "(11)91234-5678",
        "11 91234-5678",
        "11 91234 5678",
        "11912345678",
        "11.91234.5678",
        "011 91234-5678",
        "91234-5678",
        "(21) 3456-7890",
        "2134567890",
    ],
)
def test_brazilian_phone_numbers_are_redacted(phone: str) -> None:
    """Brazilian numbers, with or without +55, masks, dots or spaces, lose every digit."""
    redacted = redact_text(f"Meu número é {phone}, pode ligar.")
    assert redacted.startswith("Meu número é [")
    assert redacted.endswith("], pode ligar.")
    assert digits(redacted) == ""


@pytest.mark.parametrize(
    "phone",
    [
        "+14155550100",
        "+1 415 555 0100",
        "+1 (415) 555-0100",
        "+1-202-555-0123",
        "+44 20 7946 0958",
        "+44 7911 123456",
        "+351 912 345 678",
        "+351912345678",
        "+49 1512 3456789",
        "+8613812345678",
        "+971 50 123 4567",
    ],
)
def test_international_numbers_are_redacted(phone: str) -> None:
    """International E.164 numbers, compact or grouped, lose every digit."""
    redacted = redact_text(f"WhatsApp {phone} obrigado")
    assert digits(redacted) == ""
    assert redacted.startswith("WhatsApp ")
    assert redacted.endswith(" obrigado")


def test_phone_next_to_punctuation_is_redacted() -> None:
    """Numbers ending a sentence or in a `key:value` keep their punctuation and lose digits."""
    assert redact_text("tel:+5511912345678.") == "tel:[phone]."
    assert redact_text("meu zap é 5511912345678!") == "meu zap é [phone]!"


@pytest.mark.parametrize(
    "email",
    [
        "maria.silva@example.com.br",
        "joao+pedidos@sub.exemplo.org",
        "JOÃO.CONCEIÇÃO@EXEMPLO.COM.BR",
        "a_b-c@empresa-x.com",
        "5511912345678@s.whatsapp.net",
    ],
)
def test_emails_are_redacted(email: str) -> None:
    """E-mail addresses (accents, plus tags, subdomains, upper case) become [email]."""
    assert redact_text(f"Escreva para {email} hoje") == "Escreva para [email] hoje"


@pytest.mark.parametrize("cpf", ["123.456.789-09", "12345678909", "123456789-09"])
def test_cpf_is_redacted(cpf: str) -> None:
    """CPF, formatted or bare, becomes [cpf]."""
    assert redact_text(f"CPF {cpf}.") == "CPF [cpf]."


@pytest.mark.parametrize("cnpj", ["12.345.678/0001-90", "12345678000190", "12.345.678/000190"])
def test_cnpj_is_redacted(cnpj: str) -> None:
    """CNPJ, formatted or bare, becomes [cnpj] (not a CPF plus leftovers)."""
    assert redact_text(f"CNPJ {cnpj}.") == "CNPJ [cnpj]."


def test_several_kinds_in_one_text_are_all_redacted() -> None:
    """A message mixing every kind keeps its words and loses all the personal data."""
    text = (
        "Sou Maria Aparecida, CPF 123.456.789-09, empresa 12.345.678/0001-90, "
        "e-mail maria@exemplo.com.br, tel +55 (11) 91234-5678."
    )
    redacted = redact_text(text, ("Maria Aparecida",))
    assert redacted == "Sou [name], CPF [cpf], empresa [cnpj], e-mail [email], tel [phone]."


@pytest.mark.parametrize("written", ["Maria Aparecida", "maria aparecida", "MARIA APARECIDA"])
def test_given_names_are_redacted_in_any_case(written: str) -> None:
    """A name passed in is removed however it is capitalised."""
    assert redact_text(f"Olá, aqui é {written}!", ("Maria Aparecida",)) == "Olá, aqui é [name]!"


def test_accented_names_are_redacted_in_any_case() -> None:
    """Case-insensitive matching works for accented letters too."""
    redacted = redact_text("JOÃO CONCEIÇÃO e joão conceição", ("João Conceição",))
    assert redacted == "[name] e [name]"


def test_names_are_matched_literally() -> None:
    """A name with regex characters is matched as written, not as a pattern."""
    assert redact_text("Oi, sou Ana (Bia) Lima", ("Ana (Bia) Lima",)) == "Oi, sou [name]"
    assert redact_text("a.b.c", ("a*",)) == "a.b.c"


def test_blank_or_one_letter_names_do_not_erase_the_text() -> None:
    """An empty or single-letter name is ignored rather than redacting every letter."""
    assert redact_text("Olá, tudo bem?", ("", " ", "a")) == "Olá, tudo bem?"


@pytest.mark.parametrize(
    "ordinary",
    [
        "pedido 123 custa R$ 30,00",
        "O total ficou em R$ 1.234,56 com frete",
        "Chego às 14:30 do dia 25/11/2024",
        "Quero 2 unidades do tamanho 42",
        "Protocolo 2024-11",
        "Olá! Vocês entregam em São Paulo?",
    ],
)
def test_ordinary_text_stays_readable(ordinary: str) -> None:
    """Prices, dates, times, sizes and short numbers are not mistaken for personal data."""
    assert redact_text(ordinary) == ordinary


def test_mask_phone_keeps_the_last_four_digits() -> None:
    """Masked numbers keep only the last four digits, for operators to tell records apart."""
    assert mask_phone("5511912345678") == "*********5678"
    assert mask_phone("+55 (11) 91234-5678") == "*********5678"
    assert mask_phone("123") == "***"


def test_mask_name_keeps_initials() -> None:
    """Masked names keep only each part's first letter."""
    assert mask_name("João Conceição") == "J*** C********"


def test_message_ref_is_stable_and_hides_the_wamid() -> None:
    """A log reference is the same for one wamid, differs between wamids, and hides the id."""
    wamid = "wamid.HBgNNTUxMTkxMjM0NTY3OBUCABIYIDNBMDJGRTlC"
    assert message_ref(wamid) == message_ref(wamid)
    assert message_ref(wamid) != message_ref(wamid + "A")
    assert "HBgN" not in message_ref(wamid)
    assert re.fullmatch(r"[0-9a-f]{16}", message_ref(wamid))


def test_each_distinctive_part_of_a_name_is_redacted_on_its_own() -> None:
    """A customer who writes only their first name is still hidden; particles stay."""
    redacted = redact_text("aqui é a Maria, da família Aparecida", ("Maria Aparecida",))
    assert redacted == "aqui é a [name], da família [name]"


def test_names_match_whole_words_only() -> None:
    """A short name inside another word leaves that word alone."""
    assert redact_text("Ana comprou banana", ("Ana",)) == "[name] comprou banana"


def test_phone_with_a_single_digit_group_is_redacted_whole() -> None:
    """`(11) 9 1234-5678` hides the area code too, not just the last groups."""
    assert redact_text("liga (11) 9 1234-5678") == "liga [phone]"
