"""The dry-run outbox's one-shot send refusals (`pyloto simulate --fail-send`)."""

from __future__ import annotations

import re

import pytest

from pyloto_corp.adapters.dry_run_outbox import MAX_REFUSALS, REFUSED_REASON, SendRefusals
from pyloto_corp.application.ports import PermanentStepError
from pyloto_corp.domain.replies import reply_key


def _reply(message_id: str) -> dict[str, object]:
    return {"messaging_product": "whatsapp", "biz_opaque_callback_data": reply_key(message_id)}


def test_a_refusal_fails_its_reply_once_and_no_other() -> None:
    refusals = SendRefusals()
    refusals.refuse("wamid.A")
    refusals.check(_reply("wamid.B"))  # another record's reply goes
    refusals.check({"messaging_product": "whatsapp"})  # a body without a key goes
    with pytest.raises(PermanentStepError, match=re.escape(REFUSED_REASON)):
        refusals.check(_reply("wamid.A"))
    refusals.check(_reply("wamid.A"))  # spent: the replay is sent


def test_refusals_are_bounded_oldest_dropped() -> None:
    refusals = SendRefusals()
    for n in range(MAX_REFUSALS + 1):
        refusals.refuse(f"wamid.{n}")
    refusals.check(_reply("wamid.0"))  # dropped
    with pytest.raises(PermanentStepError):
        refusals.check(_reply(f"wamid.{MAX_REFUSALS}"))
