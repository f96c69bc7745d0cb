"""redact_text and the masks: personal data goes, ordinary text stays readable."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pyloto_corp.domain.privacy import (
    cpf_is_valid,
    find_personal_data,
    mask_name,
    mask_phone,
    mask_value,
    message_ref,
    redact_text,
)
from tests.support.helpers import BSUID, SENDER, realistic_wamid
from tests.support.pii_strategies import (
    brazilian_names,
    cnpj_check_digits,
    cpf_check_digits,
    personal_data,
    safe_values,
)


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


# --- find_personal_data: one set of detectors for redaction and the log scanner --------------

# Words around a datum in a message, a `key=value` pair or a JSON string.
PREFIXES = ("", "Meu número é ", "tel:", "sender=", "(", '"', "contato: ", "e-mail ")
SUFFIXES = ("", ".", ",", " obrigado", ")", "!", '"', "\n")


def kinds_allowed(kind: str, value: str) -> set[str]:
    """A bare run of digits may be a phone, a WhatsApp id, a CPF or a CNPJ: any digit kind
    hides it. Anything written with a mask has one kind."""
    return {"phone", "cpf", "cnpj"} if value.isdigit() else {kind}


@settings(max_examples=1500)
@given(personal_data(), st.sampled_from(PREFIXES), st.sampled_from(SUFFIXES))
def test_every_generated_datum_is_found_whole(
    item: tuple[str, str], prefix: str, suffix: str
) -> None:
    """Every phone (Brazilian in any mask, international, WhatsApp id), e-mail, CPF and CNPJ
    is found whole, with its kind, wherever it sits in a text."""
    kind, value = item
    found = find_personal_data(f"{prefix}{value}{suffix}")
    covering = [found_kind for found_kind, text in found if value in text]
    assert covering, (value, found)
    assert covering[0] in kinds_allowed(kind, value)


@settings(max_examples=500)
@given(st.lists(personal_data(), min_size=1, max_size=4), st.sampled_from(PREFIXES))
def test_redacted_text_holds_nothing_to_find(items: list[tuple[str, str]], prefix: str) -> None:
    """After redact_text no detector finds anything, and no datum is left in the text."""
    text = prefix + " e ".join(value for _, value in items) + "."
    redacted = redact_text(text)
    assert find_personal_data(redacted) == []
    for _, value in items:
        assert value not in redacted


@settings(max_examples=1000)
@given(safe_values())
def test_our_own_values_are_not_personal_data(value: str) -> None:
    """Timestamps, durations, counts, status and error codes, hex ids, traceparents, versions
    and UUIDs are never taken for personal data, alone or in a sentence."""
    assert find_personal_data(value) == []
    sentence = f"at {value}: took {value} (ref {value})"
    assert redact_text(sentence) == sentence


@settings(max_examples=300)
@given(brazilian_names(), st.sampled_from(("as is", "lower", "upper", "first name")))
def test_given_names_leave_no_distinctive_part(name: str, written: str) -> None:
    """A name passed to redact_text goes however it is written, down to each distinctive
    part (accents included); what stays are particles and the words around it."""
    shown = {
        "as is": name,
        "lower": name.lower(),
        "upper": name.upper(),
        "first name": name.split()[0],
    }[written]
    redacted = redact_text(f"Olá, aqui é {shown}, tudo bem?", (name,))
    assert redacted.startswith("Olá, aqui é [name]")
    assert redacted.endswith(", tudo bem?")
    for part in re.findall(r"\w{3,}", name):
        if part.lower() not in {"das", "dos"}:
            assert not re.search(rf"(?<!\w){re.escape(part)}(?!\w)", redacted, re.IGNORECASE)


@pytest.mark.parametrize(
    "phone",
    [
        "+55 (11) 91234-5678",
        "+5511912345678",
        "5511912345678",
        "(11) 91234-5678",
        "11 91234 5678",
        "11.91234.5678",
        "011 91234-5678",
        "0 21 11 91234-5678",
        "(0xx11) 91234-5678",
        "0xx11 3456-7890",
        "0055 11 91234 5678",
        "(+55) 11 91234-5678",
        "+55 11912345678",
        "91234-5678",
        "91234 5678",
        "9 1234-5678",
        "1234-5678",
        "+1 415 555 0100",
        "+44 20 7946 0958",
        "+351912345678",
        "0044 20 7946 0958",
    ],
)
def test_phone_formats_are_found_as_phones(phone: str) -> None:
    """Each format of the brief is found whole and as a phone."""
    assert find_personal_data(f"ligue {phone} hoje") == [("phone", phone)]


@pytest.mark.parametrize(
    ("text", "kind"),
    [
        ("5511912345678", "phone"),  # a Brazilian wa_id
        ("14155550100", "phone"),  # 11 digits, not a valid CPF: a wa_id
        ("123456789012345", "phone"),  # 15 digits: the longest E.164 number
        ("12345678909", "cpf"),  # 11 digits with a CPF's check digits
        ("12345678000195", "cnpj"),
        ("12345678000190", "cnpj"),  # wrong check digits: still someone's CNPJ
        ("123.456.789-01", "cpf"),  # masked: a CPF even with wrong check digits
        ("12.ABC.345/01DE-35", "cnpj"),  # the alphanumeric CNPJ
        ("JOÃO.CONCEIÇÃO@EXEMPLO.COM.BR", "email"),
        ("maria+pedidos@loja.sub.exemplo.com.br", "email"),
    ],
)
def test_kind_of_each_datum(text: str, kind: str) -> None:
    """Bare digit runs are told apart by length and check digits; masks say what they are."""
    assert find_personal_data(f"dado: {text}.") == [(kind, text)]


@pytest.mark.parametrize(
    "ordinary",
    [
        "1234 5678",  # two groups of four with a space: as often a code as a phone
        "1234.5678",  # a decimal
        "12345678",  # eight bare digits: an order number, a date
        "1234567890123456",  # longer than any phone number
        "123456.7890",
        "0.12345678901",  # the fraction of a number
        "12.345678000195",
        "2026-11-25T08:48:04.123Z",
        "2026-11-25 08:48:04",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        "00-12345678901234567890123456789012-1234567890123456-01",
        "4bf92f3577b34da6a3ce929d0e0e4736",
        "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
        "550e8400-1234-5678-9012-123456789012",
        "131047",
        "v1.45.2",
        "R$ 1.234.567,89",
        "pkg@1.2.3",
    ],
)
def test_look_alikes_are_not_personal_data(ordinary: str) -> None:
    """What only looks like a phone, CPF or e-mail stays as written (the decisions in the
    module's docstring)."""
    assert find_personal_data(f"valor {ordinary} ok") == []


def test_digits_inside_ids_are_not_personal_data() -> None:
    """A long digit stretch inside a hex id or a word is part of that id."""
    for text in ("ab5511912345678cd", "0x5511912345678"):
        assert find_personal_data(text) == []
    # A wamid is personal data as a whole (see below); its digits are not read as a phone.
    wamid = "wamid.HBgN5511912345678x"
    assert find_personal_data(wamid) == [("wamid", wamid)]


def test_findings_come_in_text_order() -> None:
    """Several data are reported in the order they are written."""
    text = "cpf 123.456.789-09, tel +55 11 91234-5678, mail a@b.com.br, cnpj 12.345.678/0001-95"
    assert [kind for kind, _ in find_personal_data(text)] == ["cpf", "phone", "email", "cnpj"]


@given(st.text("0123456789", min_size=9, max_size=9))
def test_cpf_check_digits_are_recognised(base: str) -> None:
    """A CPF with its own check digits is valid; with any other pair it is not."""
    check = cpf_check_digits(base)
    assert cpf_is_valid(base + check)
    wrong = f"{(int(check) + 1) % 100:02d}"
    assert not cpf_is_valid(base + wrong)


def test_cnpj_check_digits_match_known_numbers() -> None:
    """The strategies' CNPJ check digits agree with published examples, digits and letters."""
    assert cnpj_check_digits("123456780001") == "95"
    assert cnpj_check_digits("12ABC34501DE") == "35"


@pytest.mark.parametrize(
    ("kind", "value", "masked"),
    [
        ("phone", "+55 (11) 91234-5678", "*********5678"),
        ("cpf", "123.456.789-09", "*********09"),
        ("cnpj", "12.ABC.345/01DE-35", "************35"),
        ("email", "maria.silva@exemplo.com.br", "m***@***.br"),
    ],
)
def test_mask_value_keeps_only_what_tells_data_apart(kind: str, value: str, masked: str) -> None:
    """Masks keep the last digits or an e-mail's initial and top-level domain, nothing else."""
    assert mask_value(kind, value) == masked
    assert find_personal_data(masked) == []


def test_a_wamid_is_found_and_redacted_to_its_message_ref() -> None:
    """A wamid is base64 of a blob holding the sender's number: found as `wamid`, redacted to
    `[wamid:<ref>]` (the `ref` every log line of the message carries), masked to its ref."""
    wamid = realistic_wamid(SENDER)
    text = f"could not convert string to float: '{wamid}'"
    assert find_personal_data(text) == [("wamid", wamid)]
    assert redact_text(text) == f"could not convert string to float: '[wamid:{message_ref(wamid)}]'"
    assert mask_value("wamid", wamid) == f"wamid:{message_ref(wamid)}"
    dry_run = "wamid.dryrun.0123456789abcdef0123456789abcdef"
    assert find_personal_data(f"sent as {dry_run}.") == [("wamid", dry_run)]


@pytest.mark.parametrize(
    "text",
    ["a wamid.", "the wamid. field", "xwamid.ABC", "pyloto.wamid.ABC", "wamid_ABC", "WAMID"],
)
def test_text_that_only_names_a_wamid_is_left_alone(text: str) -> None:
    assert find_personal_data(text) == []


def test_a_graph_error_quoting_a_bsuid_and_a_wamid_keeps_its_code_and_words() -> None:
    """What an operator reads of a Graph error survives redaction: its code and its words."""
    wamid = realistic_wamid(SENDER)
    text = f"graph error 131026: message {wamid} to {BSUID} undeliverable"
    assert redact_text(text) == (
        f"graph error 131026: message [wamid:{message_ref(wamid)}] to [bsuid] undeliverable"
    )
