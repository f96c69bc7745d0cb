"""Domain objects as the parser would have built them, shared by the tests."""

from __future__ import annotations

import time

from pyloto_corp.domain.records import InboundMessage
from tests.support.helpers import CONTACT_NAME, SENDER, new_wamid


def inbound(
    message_id: str | None = None,
    text: str | None = "Olá, quero saber o preço",
    kind: str = "text",
    timestamp: int | None = None,
) -> InboundMessage:
    """A normalised inbound message of `kind` from the test sender (a new id when not given),
    written now unless `timestamp` says when (a reply is free text only within 24 hours)."""
    return InboundMessage(
        message_id=message_id or new_wamid(),
        sender=SENDER,
        kind=kind,
        timestamp=int(time.time()) if timestamp is None else timestamp,
        phone_number_id="106540352242922",
        text=text,
        contact_name=CONTACT_NAME,
    )
