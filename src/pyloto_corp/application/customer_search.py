"""Find a customer by what an operator knows of them: their phone number or their BSUID.

What is typed is personal data: it is only hashed here, with the keyed hash the stores key
customers by (`llm_steps.conversation_id`), and never kept, logged or quoted. A number is
read in any usual mask (`+55 (11) 91234-5678`, `0055 11 91234 5678`, `11912345678`); a
Brazilian mobile is looked for with and without its ninth digit, as WhatsApp ids of numbers
registered before it exist in both shapes, and a Brazilian number typed without `55` (nor `+`) is
looked for with it too. A number's hash leads, through its alias, to the BSUID's key its
customer's records name (docs/bsuid.md).
"""

from __future__ import annotations

import re

from pyloto_corp.application.llm_steps import conversation_id
from pyloto_corp.application.ports import ConversationStore
from pyloto_corp.domain.identity import is_bsuid

# What a number may be written with besides its digits.
_MASK = re.compile(r"[\s+\-().]")
_AREA = re.compile(r"[1-9][1-9]")
# WhatsApp ids: E.164 digits, no `+` (8 to 15 digits).
_SHORTEST, _LONGEST = 8, 15


class NotAnId(ValueError):
    """What was typed is neither a phone number nor a BSUID (the reason never quotes it)."""


def numbers_for(typed: str) -> list[str]:
    """The WhatsApp ids a typed phone number may stand for, most likely first;
    NotAnId when it is not a number."""
    international = typed.strip().startswith(("+", "00"))
    digits = _MASK.sub("", typed)
    digits = digits.removeprefix("00")
    if not digits.isdigit() or not _SHORTEST <= len(digits) <= _LONGEST:
        raise NotAnId(
            "type a phone number (8 to 15 digits; spaces, +, dashes and parentheses allowed) "
            "or a BSUID (like BR.1502576394655843)"
        )
    found = [digits]
    if not international and len(digits) in (10, 11) and _AREA.fullmatch(digits[:2]):
        found.append("55" + digits)  # a Brazilian number without its country code
    for number in list(found):
        if not number.startswith("55") or not _AREA.fullmatch(number[2:4]):
            continue
        local = number[4:]
        if len(local) == 9 and local[0] == "9":
            found.append(number[:4] + local[1:])  # a mobile written with its ninth digit
        elif len(local) == 8 and local[0] in "6789":
            found.append(number[:4] + "9" + local)  # a mobile written without it
    return list(dict.fromkeys(found))


def customer_hashes(typed: str, hash_key: str) -> list[str]:
    """The keyed hashes a typed number or BSUID may stand for; NotAnId for anything else."""
    text = typed.strip()
    bsuid = text[:2].upper() + text[2:]  # its country code typed in lower case reads the same
    if is_bsuid(bsuid):
        return [conversation_id(bsuid, hash_key)]
    return [conversation_id(number, hash_key) for number in numbers_for(text)]


async def find_customer(store: ConversationStore, typed: str, hash_key: str) -> str | None:
    """The customer key whose records a typed number or BSUID leads to (None when none of
    its shapes has a record kept); NotAnId when it is neither."""
    for hashed in customer_hashes(typed, hash_key):
        key = await store.customer_of(hashed)
        if await store.conversation_records(key, 1):
            return key
    return None
