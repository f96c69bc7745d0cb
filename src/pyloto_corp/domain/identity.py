"""Who a customer is: their phone number, when WhatsApp may show it, and their business-scoped
user id (BSUID), which WhatsApp always gives since April 2026.

A BSUID is `CC.<up to 128 letters and digits>` (ISO 3166 country code, e.g.
`BR.1502576394655843`); a parent BSUID, shared across linked business portfolios, adds
`ENT.` (`BR.ENT.…`). A customer who adopts a WhatsApp username stops exposing the number:
their messages carry only the BSUID, and a reply must then name it in `recipient`, since a
BSUID put in `to` is accepted and never delivered.
https://developers.facebook.com/documentation/business-messaging/whatsapp/business-scoped-user-ids
(as mirrored at https://support.chatarchitect.com/books/meta-whatsapp/page/business-scoped-user-ids-developer-documentation)
and https://github.com/chatwoot/chatwoot/pull/15150 (a BSUID in `to`: 200, never delivered).
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pyloto_corp.domain.records import InboundMessage

BSUID = re.compile(r"[A-Z]{2}\.(?:ENT\.)?[0-9A-Za-z]{1,128}")


def is_bsuid(value: str | None) -> bool:
    """Whether `value` is a business-scoped user id (or a parent one)."""
    return bool(value) and BSUID.fullmatch(value or "") is not None


def recipient_fields(message: InboundMessage) -> dict[str, str]:
    """Whom a reply to `message` goes to, as the Graph API names them: `to` with the phone
    number when one is known, else `recipient` with the BSUID, never both (Meta lets `to`
    win, so a stale number would shadow the BSUID)."""
    phone = message.phone
    if phone:
        return {"to": phone}
    if message.bsuid:
        return {"recipient": message.bsuid}
    return {"to": message.sender}
