"""Hypothesis strategies for personal data as Brazilians write it, and for our own safe values.

Generated independently of the detectors (check digits are computed here, formats are listed
from how people write them), so a property test can tell when a detector misses a format.
"""

from __future__ import annotations

import base64
import re
import string
from datetime import UTC, datetime

from hypothesis import assume
from hypothesis import strategies as st

DIGITS = string.digits

FIRST_NAMES = (
    "João", "José", "Antônio", "Francisco", "Sebastião", "Luís", "Márcio", "Fábio", "Caio",
    "Kauã", "Thiago", "Raí", "Conceição", "Maria", "Ana", "Luíza", "Letícia", "Vitória",
    "Heloísa", "Cláudia", "Lúcia", "Inês", "Thaís", "Raíssa", "Célia", "Aparecida", "Bruna",
)  # fmt: skip
SURNAMES = (
    "Silva", "Santos", "Oliveira", "Souza", "Gonçalves", "Conceição", "Araújo", "Pereira",
    "Lima", "Ribeiro", "Magalhães", "Simões", "Brandão", "Assunção", "Falcão", "Damião",
    "Guimarães", "Câmara", "Nóbrega", "Azevêdo", "Melo", "Sá", "Ávila",
)  # fmt: skip
PARTICLES = ("", "", "de ", "da ", "dos ", "do ")

AREA_CODES = tuple(
    str(code)
    for code in (*range(11, 20), 21, 22, 24, 27, 28, *range(31, 36), 37, 38, *range(41, 47),
                 47, 48, 49, 51, 53, 54, 55, *range(61, 70), 71, 73, 74, 75, 77, 79,
                 *range(81, 90), *range(91, 100))
)  # fmt: skip
COUNTRY_CODES = ("1", "7", "33", "34", "44", "49", "52", "54", "61", "81", "86", "91", "351",
                 "353", "971", "598")  # fmt: skip
EMAIL_TLDS = ("com", "com.br", "org", "org.br", "net", "br", "io", "gov.br", "co.uk")


def digits(size: int, first: str = DIGITS) -> st.SearchStrategy[str]:
    """`size` random digits, the first drawn from `first`."""
    head = st.sampled_from(first)
    tail = st.text(DIGITS, min_size=size - 1, max_size=size - 1)
    return st.tuples(head, tail).map("".join)


def separators(*choices: str) -> st.SearchStrategy[str]:
    """One of the separators people put between groups of digits."""
    return st.sampled_from(choices or ("", " ", "-", "."))


@st.composite
def subscriber_numbers(draw: st.DrawFn, *, local: bool = False) -> str:
    """A mobile (9 + 8 digits) or landline (8 digits) number, grouped as people write it.

    Without an area code (`local`) only the forms the detectors promise to catch: groups
    joined by a dash, or a mobile as `91234 5678`.
    """
    mobile = draw(st.booleans())
    head, tail = draw(digits(4)), draw(digits(4))
    sep = draw(separators("-") if local else separators())
    if not mobile:
        return f"{draw(digits(1, '2345'))}{head[1:]}{sep}{tail}"
    if local and draw(st.booleans()):
        return f"9{head} {tail}"
    nine = draw(st.sampled_from(("9", "9 ", "9-", "9."))) if sep else "9"
    return f"{nine}{head}{sep}{tail}"


@st.composite
def brazilian_phones(draw: st.DrawFn) -> str:
    """A Brazilian number in any of the ways it is written: +55, 55, 0055, trunk 0 and carrier
    code, area code in parentheses or not, spaces, dots, dashes or nothing."""
    scope = draw(st.sampled_from(("international", "national", "trunk", "local")))
    if scope == "local":
        return draw(subscriber_numbers(local=True))
    area = draw(st.sampled_from(AREA_CODES))
    gap = draw(separators("", " ", "-", "."))
    if scope == "trunk":
        carrier = draw(st.sampled_from(("", "", "21", "15", "41", "xx", "XX")))
        trunk_gap = draw(separators("", " ")) if carrier else ""
        area = f"0{trunk_gap}{carrier}{trunk_gap}{area}"
    if draw(st.booleans()):
        area = f"({area})"
        gap = draw(separators("", " "))
    number = f"{area}{gap}{draw(subscriber_numbers())}"
    # `11.912345678` is written like a decimal number, and taken for one by the detectors.
    assume(not re.fullmatch(r"[0-9]+\.[0-9]+", number))
    if scope == "national":
        return number
    if scope == "international":
        country = draw(st.sampled_from(("+55", "55", "0055", "(+55)", "+55")))
        return f"{country}{draw(separators('', ' ', '-'))}{number}"
    return number


@st.composite
def international_phones(draw: st.DrawFn) -> str:
    """An E.164 number after + or 00, compact or grouped (first group maybe in parentheses)."""
    country = draw(st.sampled_from(COUNTRY_CODES))
    national = draw(st.integers(min_value=max(7, 8 - len(country)), max_value=15 - len(country)))
    body = draw(digits(national, "123456789"))
    prefix = draw(st.sampled_from(("+", "+", "00")))
    # Written compact after 00 it is a bare run of digits, a phone only up to 15 of them.
    if draw(st.booleans()) and len(prefix + country + body) <= 15:
        return f"{prefix}{country}{body}"
    groups: list[str] = []
    rest = body
    while rest:
        size = draw(st.integers(2, 4))
        groups.append(rest[:size])
        rest = rest[size:]
    if draw(st.booleans()):
        groups[0] = f"({groups[0]})"
    sep = draw(separators(" ", "-", "."))
    return prefix + country + sep + sep.join(groups)


def whatsapp_ids() -> st.SearchStrategy[str]:
    """A wa_id: the number in E.164 without +, 10 to 15 bare digits."""
    any_country = st.integers(10, 15).flatmap(lambda size: digits(size, "123456789"))
    brazilian = st.tuples(digits(2, "123456789"), digits(8), st.sampled_from(("", "9"))).map(
        lambda parts: f"55{parts[0]}{parts[2]}{parts[1]}"
    )
    return st.one_of(any_country, brazilian)


def phones() -> st.SearchStrategy[str]:
    """Any phone number or WhatsApp id the detectors must catch."""
    return st.one_of(brazilian_phones(), international_phones(), whatsapp_ids())


def _check_digit(values: list[int], weights: list[int]) -> int:
    remainder = sum(v * w for v, w in zip(values, weights, strict=True)) % 11
    return 0 if remainder < 2 else 11 - remainder


def cpf_check_digits(base: str) -> str:
    """The two check digits of a CPF's first nine digits."""
    values = [int(ch) for ch in base]
    for size in (9, 10):
        values.append(_check_digit(values, list(range(size + 1, 1, -1))))
    return f"{values[9]}{values[10]}"


def cnpj_check_digits(base: str) -> str:
    """The two check digits of a CNPJ's first twelve characters (digits or, since 2026,
    capital letters, each worth its ASCII code minus 48)."""
    values = [ord(ch) - 48 for ch in base]
    for weights in ([5, 4, 3, 2, 9, 8, 7, 6, 5, 4, 3, 2], [6, 5, 4, 3, 2, 9, 8, 7, 6, 5, 4, 3, 2]):
        values.append(_check_digit(values, weights))
    return f"{values[12]}{values[13]}"


@st.composite
def cpfs(draw: st.DrawFn, *, formatted: bool | None = None) -> str:
    """A CPF with valid or random check digits, as `123.456.789-09`, `123456789-09` or bare."""
    base = draw(digits(9))
    check = cpf_check_digits(base) if draw(st.booleans()) else draw(digits(2))
    shape = draw(
        st.sampled_from(("masked", "dash", "bare"))
        if formatted is None
        else st.just("masked" if formatted else "bare")
    )
    if shape == "masked":
        return f"{base[:3]}.{base[3:6]}.{base[6:]}-{check}"
    return f"{base}-{check}" if shape == "dash" else base + check


@st.composite
def cnpjs(draw: st.DrawFn, *, formatted: bool | None = None) -> str:
    """A CNPJ, valid or random check digits, formatted or bare; or a formatted alphanumeric
    one (issued since July 2026)."""
    alphanumeric = formatted is not False and draw(st.integers(0, 3)) == 0
    alphabet = DIGITS + string.ascii_uppercase if alphanumeric else DIGITS
    base = draw(st.text(alphabet, min_size=12, max_size=12))
    check = cnpj_check_digits(base) if draw(st.booleans()) else draw(digits(2))
    masked = alphanumeric or (draw(st.booleans()) if formatted is None else formatted)
    if masked:
        return f"{base[:2]}.{base[2:5]}.{base[5:8]}/{base[8:]}-{check}"
    return base + check


@st.composite
def emails(draw: st.DrawFn) -> str:
    """An ASCII e-mail address: dots, plus-addressing, subdomains, any letter case."""
    word = st.text(string.ascii_lowercase + DIGITS, min_size=1, max_size=10)
    local = draw(st.lists(word, min_size=1, max_size=3).map(lambda w: ".".join(w)))
    local = draw(st.sampled_from(("", "_", "-"))).join([local, *draw(st.lists(word, max_size=1))])
    if draw(st.booleans()):
        local += "+" + draw(word)
    label = st.text(string.ascii_lowercase + DIGITS, min_size=1, max_size=12)
    hosts = draw(st.lists(label, min_size=1, max_size=3))
    address = f"{local}@{'.'.join(hosts)}.{draw(st.sampled_from(EMAIL_TLDS))}"
    case = draw(st.sampled_from(("lower", "upper", "title")))
    return {"lower": address, "upper": address.upper(), "title": address.title()}[case]


@st.composite
def brazilian_names(draw: st.DrawFn) -> str:
    """A Brazilian person's name: one or two first names and one to three surnames."""
    first = dict.fromkeys(draw(st.lists(st.sampled_from(FIRST_NAMES), min_size=1, max_size=2)))
    surnames = dict.fromkeys(draw(st.lists(st.sampled_from(SURNAMES), min_size=1, max_size=3)))
    parts = [draw(st.sampled_from(PARTICLES)) + surname for surname in surnames]
    return " ".join([*first, *parts])


# ISO 3166 alpha-2 codes of the countries a BSUID may start with.
BSUID_COUNTRIES = ("BR", "US", "PT", "AR", "MX", "IN", "GB", "DE", "CO", "ES", "HK", "NG")


@st.composite
def bsuids(draw: st.DrawFn) -> str:
    """Business-scoped user ids as Meta writes them: `BR.1502576394655843`, mostly digits
    (the examples Meta publishes), sometimes letters and digits, up to 128 after the dot;
    parent ids (`BR.ENT.…`) too."""
    country = draw(st.sampled_from(BSUID_COUNTRIES))
    parent = draw(st.sampled_from(("", "", "", "ENT.")))
    if draw(st.booleans()):
        tail = draw(digits(draw(st.integers(15, 20)), "123456789"))
    else:
        alphabet = string.ascii_letters + DIGITS
        tail = draw(st.text(alphabet, min_size=7, max_size=127)) + draw(st.sampled_from(DIGITS))
        tail = "".join(draw(st.permutations(tail))) if len(tail) < 24 else tail
    return f"{country}.{parent}{tail}"


@st.composite
def wamids(draw: st.DrawFn) -> str:
    """WhatsApp message ids as Meta writes them: `wamid.` and the base64 (standard, padded or
    not, or URL-safe) of a blob that embeds the customer's number between a few framing bytes
    and a random tail."""
    number = draw(whatsapp_ids())
    head = bytes([0x18, len(number)])
    tail = draw(st.binary(min_size=8, max_size=24))
    blob = head + number.encode() + b"\x15\x02\x00\x12\x18" + tail
    encoded = draw(st.sampled_from([base64.b64encode, base64.urlsafe_b64encode]))(blob).decode()
    if draw(st.booleans()):
        encoded = encoded.rstrip("=")
    return f"wamid.{encoded}"


def personal_data() -> st.SearchStrategy[tuple[str, str]]:
    """(kind, value) for every kind a detector must find: `phone`, `bsuid`, `wamid`,
    `email`, `cpf`, `cnpj`.

    Names are not here: no pattern finds a name, only the names a caller passes to
    `redact_text` (see `brazilian_names`).
    """
    return st.one_of(
        phones().map(lambda value: ("phone", value)),
        bsuids().map(lambda value: ("bsuid", value)),
        wamids().map(lambda value: ("wamid", value)),
        emails().map(lambda value: ("email", value)),
        cpfs().map(lambda value: ("cpf", value)),
        cnpjs().map(lambda value: ("cnpj", value)),
    )


# --- values of our own that must never be taken for personal data --------------------------

SPAN_IDS = st.binary(min_size=8, max_size=8).map(bytes.hex)  # also message refs: 16 hex
TRACE_IDS = st.binary(min_size=16, max_size=16).map(bytes.hex)
SHA256_HEX = st.binary(min_size=32, max_size=32).map(bytes.hex)
# Ids with long all-digit stretches, where a digit-run detector would slip.
DIGIT_HEAVY_IDS = st.sampled_from((16, 32)).flatmap(lambda size: digits(size))

_times = st.datetimes(
    min_value=datetime(2000, 1, 1), max_value=datetime(2099, 12, 31), timezones=st.just(UTC)
)


def timestamps() -> st.SearchStrategy[str]:
    """ISO 8601 times as our logs, spans and gcloud write them."""
    return st.one_of(
        _times.map(lambda t: t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{t.microsecond // 1000:03d}Z"),
        _times.map(lambda t: t.strftime("%Y-%m-%d %H:%M:%S")),
        _times.map(lambda t: t.strftime("%Y-%m-%dT%H:%M:%S.%fZ")),
        _times.map(lambda t: t.isoformat()),
        _times.map(lambda t: t.strftime("%Y-%m-%dT%H:%M:%S.%f") + "123Z"),
    )


def durations() -> st.SearchStrategy[str]:
    """Seconds or milliseconds as we print them: `12.345`, `0.1234567890123`."""
    value = st.floats(min_value=0, max_value=1e6, allow_nan=False, allow_infinity=False)
    return st.one_of(value.map(lambda v: f"{v:.3f}"), value.map(repr))


def traceparents() -> st.SearchStrategy[str]:
    """W3C `traceparent` header values."""
    trace = st.one_of(TRACE_IDS, digits(32))
    span = st.one_of(SPAN_IDS, digits(16))
    flags = st.sampled_from(("00", "01"))
    return st.tuples(trace, span, flags).map(lambda p: f"00-{p[0]}-{p[1]}-{p[2]}")


def safe_values() -> st.SearchStrategy[str]:
    """Values our logs and spans carry that are not personal data."""
    return st.one_of(
        timestamps(),
        durations(),
        st.integers(0, 99_999).map(str),  # counts, attempts, token counts
        st.integers(100, 599).map(str),  # HTTP status codes
        st.sampled_from(("131047", "131026", "131051", "130429", "131056", "80007", "190")),
        st.integers(0, 999_999).map(str),  # other Graph error codes
        SPAN_IDS,
        TRACE_IDS,
        SHA256_HEX,
        DIGIT_HEAVY_IDS,
        traceparents(),
        st.tuples(st.integers(0, 99), st.integers(0, 999), st.integers(0, 9999)).map(
            lambda v: f"{v[0]}.{v[1]}.{v[2]}"
        ),
        st.uuids().map(str),
    )
