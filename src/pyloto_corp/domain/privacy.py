"""Detectors for personal data (phones, WhatsApp ids, wamids, BSUIDs, e-mails, CPF, CNPJ) and
ways to hide it.

`find_personal_data` is the one set of detectors: redaction (`redact_text`, used by the
logging filter and the span exporter) and the log scanner (`observability.pii_scan`) both go
through it, so whatever one finds the other finds too.

What counts as a phone number, and what deliberately does not:

- Brazilian numbers with an area code, in any mask: with or without `+55` / `55` / `0055`,
  the trunk `0` and a carrier code (`0 21 11 …`, `0xx11`), the area code in parentheses or
  not, mobile (9 + 8 digits) or landline (8 digits), grouped by spaces, dots, dashes or
  nothing (`+55 (11) 91234-5678`, `011 91234-5678`, `11.91234.5678`, `11912345678`).
- Local numbers without an area code only with a dash (`91234-5678`, `1234-5678`) or, for
  mobiles, `91234 5678`: a dash between two groups of four is how Brazilians write a phone,
  while `1234 5678`, `1234.5678` and a bare `12345678` are as likely an order number, a
  decimal or a date, so they are left alone.
- International numbers after `+` or `00`, compact or grouped (`+44 20 7946 0958`).
- Any bare run of 10 to 15 digits: a WhatsApp id is the number in E.164 without the `+`.
  Longer runs are ids of something else (E.164 stops at 15 digits).

A business-scoped user id (BSUID, `BR.1502576394655843`, parent `BR.ENT.…`) is a persistent
identifier of one person, found like a phone number: two capitals (the country), a dot, maybe
`ENT.`, then 6 to 128 letters and digits with at least one digit, as a token of its own (not
after a dot, so `pyloto.BR.x` or a dotted module path is not one).

A WhatsApp message id (`wamid.HBgNNTUxMTk4NzY1NDMyMRUCABIYFDNFQjA…`) is base64 of a blob
that embeds the sender's (or, for a reply, the recipient's) number: any token that starts
with `wamid.` is one, whatever follows, so no guess about Meta's encoding is needed. Redacted,
it becomes `[wamid:<ref>]`, its `message_ref`: the reference every log line of that message
carries, so the line still names the message. (The base64 alone, without its `wamid.`, is not
recognised: nothing in pyloto writes it so.)

Digits inside a word or a hex id (trace and span ids, sha256 refs), either side of a decimal
point (`12.345`), ISO timestamps and UUIDs are never personal data. A bare run of 11 digits
is a CPF when its check digits say so, otherwise a phone number (a mobile with its area code
has 11 digits too); a bare run of 14 digits is a CNPJ, whatever its check digits. A number
written with `+` is a phone. Masked CPF and CNPJ are taken as written.
"""

from __future__ import annotations

import functools
import hashlib
import re
from collections.abc import Callable

# Letters and digits: a token that continues through one of these is a word or an id.
_ALNUM = r"[0-9A-Za-z]"
# A datum starts and ends where a token does, and never next to a decimal point.
_START = rf"(?<!{_ALNUM})(?<![0-9]\.)"
_END = rf"(?!{_ALNUM})(?!\.[0-9])"
_SEP = r"[ \t\u00a0.\-]"

# Starts only where a run of its characters starts: tried from inside a long run, the local
# part would be re-read to the end from every position (quadratic on a 100 kB log line).
EMAIL = re.compile(r"(?<![\w.+-])[\w.+-]+@[\w-]+(?:\.[\w-]+)*\.[^\W\d_]{2,}")
# 12.345.678/0001-95 or 12345678000195; since 2026 also alphanumeric, 12.ABC.345/01DE-35
# (only written with its mask: a bare run of 14 capitals and digits is too often an id).
CNPJ = re.compile(
    rf"{_START}(?<!\+)(?:[0-9]{{2}}\.?[0-9]{{3}}\.?[0-9]{{3}}/?[0-9]{{4}}-?[0-9]{{2}}"
    rf"|[0-9A-Z]{{2}}\.[0-9A-Z]{{3}}\.[0-9A-Z]{{3}}/[0-9A-Z]{{4}}-[0-9]{{2}}){_END}"
)
# 123.456.789-09, 123456789-09 or 12345678909.
CPF = re.compile(rf"{_START}(?<!\+)[0-9]{{3}}\.?[0-9]{{3}}\.?[0-9]{{3}}-?[0-9]{{2}}{_END}")

_COUNTRY = r"\(?(?:\+|00)?55\)?"  # Brazil: +55, 0055, 55, (+55)
_TRUNK = rf"0(?:{_SEP}?(?:[0-9]{{2}}|[xX]{{2}}))?"  # trunk 0, maybe a carrier code: 0 21, 0xx
_AREA = r"[1-9][1-9]"  # no Brazilian area code has a 0
_SUBSCRIBER = rf"(?:9{_SEP}?)?[0-9]{{4}}{_SEP}?[0-9]{{4}}"
_BRAZILIAN = (
    rf"(?:{_COUNTRY}{_SEP}?)?"
    rf"(?:\({_SEP}?(?:{_TRUNK}{_SEP}?)?{_AREA}{_SEP}?\)|(?:{_TRUNK}{_SEP}?)?{_AREA})"
    rf"{_SEP}?{_SUBSCRIBER}"
)
# Without an area code: not next to `-x`/`.x` either, or the middle of a UUID would match.
_LOCAL = (
    rf"(?<!{_ALNUM}[.\-])"
    rf"(?:(?:9{_SEP}?)?[0-9]{{4}}-[0-9]{{4}}|9[0-9]{{4}} [0-9]{{4}})"
    rf"(?![.\-]{_ALNUM})"
)
_INTERNATIONAL = r"(?:\+|00)[1-9](?:[ .\-()]{0,2}[0-9]){7,14}"
_BARE = r"[0-9]{10,15}"  # a WhatsApp id: E.164 without the +
PHONE = re.compile(rf"{_START}(?:{_INTERNATIONAL}|{_BRAZILIAN}|{_LOCAL}|{_BARE}){_END}")
# A number written with + is a phone whatever its grouping: found before CPF and CNPJ, which
# would otherwise take its tail (`+1-415555010-01`).
_DIALLED = re.compile(
    rf"{_START}(?:\(\+[1-9][0-9]{{0,2}}\)|\+[1-9])(?:[ .\-()]{{0,2}}[0-9]){{6,14}}{_END}"
)

# Meta's BSUIDs are long runs of digits; the one-digit floor keeps words (`OK.Thanks`) out.
BSUID = re.compile(
    r"(?<![0-9A-Za-z.])[A-Z]{2}\.(?:ENT\.)?(?=[A-Za-z]{0,127}[0-9])[0-9A-Za-z]{6,128}"
    r"(?![0-9A-Za-z])"
)
# A capital pair and a dot: the cheapest sign a text may hold a BSUID.
_BSUID_HINT = re.compile(r"[A-Z]{2}\.")

# `wamid.` and the rest of its token: base64 (`+`, `/`, `=`; `-` and `_` in the URL-safe
# alphabet) and dotted parts (`wamid.dryrun.…`); not after a letter, digit or dot.
WAMID_PREFIX = "wamid."
WAMID = re.compile(r"(?<![0-9A-Za-z_.])wamid\.[0-9A-Za-z+/=_\-]+(?:\.[0-9A-Za-z+/=_\-]+)*")

# Our own values that look like digits and dashes: found first and left alone.
_NOT_PERSONAL = re.compile(
    rf"(?<!{_ALNUM})[0-9a-fA-F]{{8}}(?:-[0-9a-fA-F]{{4}}){{3}}-[0-9a-fA-F]{{12}}(?!{_ALNUM})"
    r"|(?<![0-9])(?:19|20)[0-9]{2}-(?:0[1-9]|1[0-2])-(?:0[1-9]|[12][0-9]|3[01])(?![0-9])"
    r"(?:[T ][0-9]{2}:[0-9]{2}(?::[0-9]{2}(?:[.,][0-9]+)?)?)?"  # ISO 8601 dates and times
)
_DECIMAL = re.compile(r"[0-9]+\.[0-9]+")
# Stands in for text already claimed: not a letter, digit, separator or e-mail character.
_CLAIMED = "\ue000"

# Parts of Brazilian names too common to redact on their own.
_PARTICLES = frozenset({"de", "da", "do", "das", "dos", "e", "di", "du", "van", "von"})


def _digits(text: str) -> str:
    return "".join(ch for ch in text if ch.isdigit())


def cpf_is_valid(number: str) -> bool:
    """Whether the 11 digits of `number` end in a CPF's two check digits."""
    digits = [int(ch) for ch in _digits(number)]
    if len(digits) != 11:
        return False
    for size in (9, 10):
        total = sum(d * w for d, w in zip(digits[:size], range(size + 1, 1, -1), strict=True))
        if (total * 10) % 11 % 10 != digits[size]:
            return False
    return True


def _document_kind(kind: str) -> Callable[[str], str | None]:
    """`kind` for a masked document; bare digits and decimals are not for this detector."""
    return lambda value: None if value.isdigit() or _DECIMAL.fullmatch(value) else kind


def _phone_kind(value: str) -> str | None:
    """`phone`, or for a bare run of digits the document it is, or None for a look-alike."""
    digits = _digits(value)
    if value.startswith("00") and not value.isdigit():
        digits = digits[2:]  # `00 44 …` dials out like `+44 …`; a bare run is counted whole
    if _DECIMAL.fullmatch(value) or not 8 <= len(digits) <= 15:
        return None
    if value.isdigit() and len(value) == 14:
        return "cnpj"  # even with wrong check digits: a customer's typo is still their CNPJ
    if value.isdigit() and len(value) == 11 and cpf_is_valid(value):
        return "cpf"
    return "phone"


# In this order: an e-mail may hold a WhatsApp id, and a masked CPF or CNPJ may look like a
# number dialled with 00 (`001.234.567-89`). Bare runs of digits are left to `_phone_kind`:
# a phone number with its country code may end in 11 digits a CPF would otherwise take
# (`+55 11912345678`).
_DETECTORS: tuple[tuple[re.Pattern[str], Callable[[str], str | None]], ...] = (
    (WAMID, lambda _: "wamid"),  # first: its base64 may hold digits, capitals and dots
    (EMAIL, lambda _: "email"),
    (BSUID, lambda _: "bsuid"),  # before phones: its digits would read as a WhatsApp id
    (_DIALLED, _phone_kind),
    (CNPJ, _document_kind("cnpj")),
    (CPF, _document_kind("cpf")),
    (PHONE, _phone_kind),
)


def _claim(text: str, spans: list[tuple[int, int]]) -> str:
    """`text` with the spans (in order) overwritten, same length, so later detectors skip
    them."""
    pieces: list[str] = []
    cursor = 0
    for start, end in spans:
        pieces += [text[cursor:start], _CLAIMED * (end - start)]
        cursor = end
    pieces.append(text[cursor:])
    return "".join(pieces)


# Seven ASCII digits anywhere in the text: the fewest a phone number, CPF or CNPJ written
# with digits only has (`+1 234567`, dialled); fewer is possible only in an e-mail (`@`) or
# an alphanumeric CNPJ, which is always written with its `/`.
_SEVEN_DIGITS = re.compile(r"[0-9](?:[^0-9]*[0-9]){6}")


def _locate(text: str) -> list[tuple[str, int, int]]:
    """(kind, start, end) of each personal datum in `text`, in order, never overlapping."""
    if (
        "@" not in text
        and "/" not in text
        and _SEVEN_DIGITS.search(text) is None
        and _BSUID_HINT.search(text) is None
        and WAMID_PREFIX not in text
    ):
        return []  # most log text is a word or two, a count, an id with a digit or two
    found: list[tuple[str, int, int]] = []
    work = _claim(text, [match.span() for match in _NOT_PERSONAL.finditer(text)])
    for pattern, kind_of in _DETECTORS:
        spans: list[tuple[int, int]] = []
        for match in pattern.finditer(work):
            kind = kind_of(match.group())
            if kind is not None:
                found.append((kind, *match.span()))
                spans.append(match.span())
        work = _claim(work, spans)
    return sorted(found, key=lambda item: item[1])


def find_personal_data(text: str) -> list[tuple[str, str]]:
    """(kind, text) of each phone number, WhatsApp id, wamid, BSUID, e-mail, CPF and CNPJ in
    `text`.

    Kinds are `phone`, `wamid`, `bsuid`, `email`, `cpf` and `cnpj`; the order is the order in
    the text.
    """
    return [(kind, text[start:end]) for kind, start, end in _locate(text)]


def redact_text(text: str, names: tuple[str, ...] = ()) -> str:
    """`text` with wamids (by their `message_ref`), e-mails, BSUIDs, CNPJ, CPF, phone numbers
    and the given names replaced."""
    pieces: list[str] = []
    cursor = 0
    for kind, start, end in _locate(text):
        shown = f"[wamid:{message_ref(text[start:end])}]" if kind == "wamid" else f"[{kind}]"
        pieces += [text[cursor:start], shown]
        cursor = end
    pieces.append(text[cursor:])
    return redact_names("".join(pieces), names)


def redact_names(text: str, names: tuple[str, ...]) -> str:
    """`text` with the given names (whole, then their distinctive parts) replaced."""
    if not names:
        return text
    pattern = _names_pattern(names)
    return text if pattern is None else pattern.sub("[name]", text)


@functools.lru_cache(maxsize=64)
def _names_pattern(names: tuple[str, ...]) -> re.Pattern[str] | None:
    """One pattern for every name and each of its distinctive parts, longest first, so a
    whole name is taken before a part of it. Cached: the same customer's names are given
    for every line of their message (a few at a time; a small cache holds no one for long)."""
    pieces: dict[str, None] = {}
    for name in names:
        whole = name.strip()
        if len(whole) < 2:
            continue
        pieces[whole] = None
        for word in re.findall(r"\w+", whole):
            if len(word) >= 3 and word.lower() not in _PARTICLES:
                pieces[word] = None
    if not pieces:
        return None
    ordered = sorted(pieces, key=len, reverse=True)
    alternatives = "|".join(re.escape(piece) for piece in ordered)
    return re.compile(rf"(?<!\w)(?:{alternatives})(?!\w)", re.IGNORECASE)


def mask_phone(number: str) -> str:
    """Keep only the last four digits of a phone number or WhatsApp id."""
    digits = _digits(number)
    if len(digits) <= 4:
        return "*" * len(digits)
    return "*" * (len(digits) - 4) + digits[-4:]


def mask_user_id(user_id: str) -> str:
    """Keep only the country code and the last four characters of a BSUID."""
    country, _, rest = user_id.partition(".")
    if not rest:
        return "*" * len(user_id)
    tail = rest.rsplit(".", 1)[-1]
    shown = tail[-4:] if len(tail) > 4 else ""
    return f"{country}.{'*' * (len(rest) - len(shown))}{shown}"


def mask_value(kind: str, value: str) -> str:
    """A datum found by `find_personal_data`, hidden but for what tells two apart: a phone's
    or BSUID's last four characters, a document's last two, an e-mail's first letter and
    top-level domain; a wamid is shown as its `message_ref`."""
    if kind == "wamid":
        return f"wamid:{message_ref(value)}"
    if kind == "bsuid":
        return mask_user_id(value)
    if kind == "email":
        local, _, domain = value.partition("@")
        return f"{local[:1]}***@***.{domain.rsplit('.', 1)[-1]}"
    if kind == "phone":
        return mask_phone(value)
    chars = [ch for ch in value if ch.isalnum()]
    return "*" * (len(chars) - 2) + "".join(chars[-2:])


def mask_name(name: str) -> str:
    """Keep only the first letter of each part of a name."""
    return " ".join(part[:1] + "*" * (len(part) - 1) for part in name.split())


@functools.lru_cache(maxsize=4096)  # every log line and span of a message names it
def message_ref(message_id: str) -> str:
    """A stable reference to a message for logs: wamids encode the sender's number."""
    return hashlib.sha256(message_id.encode()).hexdigest()[:16]
