"""Patterns for personal data (phones, e-mails, CPF, CNPJ) and ways to hide it."""

from __future__ import annotations

import hashlib
import re

EMAIL = re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+")
# Formatted or bare: 12.345.678/0001-90, 12345678000190.
CNPJ = re.compile(r"(?<!\d)\d{2}\.?\d{3}\.?\d{3}/?\d{4}-?\d{2}(?!\d)")
# Formatted or bare: 123.456.789-09, 12345678909.
CPF = re.compile(r"(?<!\d)\d{3}\.?\d{3}\.?\d{3}-?\d{2}(?!\d)")
# Phone numbers: +55 (11) 91234-5678, 11 91234 5678, 5511912345678, +1 415 555 0100, ...
# Eight or more digits, optionally grouped by spaces, dots, dashes or parentheses.
PHONE = re.compile(r"(?<![\w])\+?\(?\d{1,3}\)?(?:[\s.\-]?\(?\d{1,5}\)?){2,6}(?![\w])")
# Parts of Brazilian names too common to redact on their own.
_PARTICLES = frozenset({"de", "da", "do", "das", "dos", "e", "di", "du", "van", "von"})

_PATTERNS = (("email", EMAIL), ("cnpj", CNPJ), ("cpf", CPF), ("phone", PHONE))


def _digits(text: str) -> int:
    return sum(ch.isdigit() for ch in text)


def redact_text(text: str, names: tuple[str, ...] = ()) -> str:
    """`text` with e-mails, CNPJ, CPF, phone numbers and the given names replaced."""
    for label, pattern in _PATTERNS:
        text = pattern.sub(
            lambda match, label=label: (  # type: ignore[misc]
                f"[{label}]" if label != "phone" or _digits(match.group()) >= 8 else match.group()
            ),
            text,
        )
    return redact_names(text, names)


def redact_names(text: str, names: tuple[str, ...]) -> str:
    """`text` with the given names (whole, then their distinctive parts) replaced."""
    for name in names:
        text = _redact_name(text, name)
    return text


def _redact_name(text: str, name: str) -> str:
    """Remove the whole name, then each of its distinctive parts on its own."""
    whole = name.strip()
    if len(whole) < 2:
        return text
    words = [w for w in re.findall(r"\w+", whole) if len(w) >= 3 and w.lower() not in _PARTICLES]
    for piece in (whole, *words):
        text = re.sub(rf"(?<!\w){re.escape(piece)}(?!\w)", "[name]", text, flags=re.IGNORECASE)
    return text


def mask_phone(number: str) -> str:
    """Keep only the last four digits of a phone number or WhatsApp id."""
    digits = [ch for ch in number if ch.isdigit()]
    if len(digits) <= 4:
        return "*" * len(digits)
    return "*" * (len(digits) - 4) + "".join(digits[-4:])


def mask_name(name: str) -> str:
    """Keep only the first letter of each part of a name."""
    return " ".join(part[:1] + "*" * (len(part) - 1) for part in name.split())


def message_ref(message_id: str) -> str:
    """A stable reference to a message for logs: wamids encode the sender's number."""
    return hashlib.sha256(message_id.encode()).hexdigest()[:16]
