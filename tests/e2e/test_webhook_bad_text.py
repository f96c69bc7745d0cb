"""One message with text that cannot be carried as it is never rejects its batch.

A lone UTF-16 surrogate escape (half an emoji) or bytes that are not UTF-8 are valid enough
for Meta to send; a 400 would make Meta retry the whole batch for 7 days, losing every
message in it. The odd message is stored with U+FFFD in place of the bad sequence.
"""

from __future__ import annotations

import pytest

from pyloto_corp.adapters.whatsapp_webhook import parse_webhook
from tests.e2e.support import Pyloto
from tests.support.helpers import encode, envelope, new_wamid, text_message

pytestmark = pytest.mark.anyio

HOLE = "HOLE-FOR-RAW-JSON"


def batch_with(raw_text: bytes, ids: list[str]) -> bytes:
    """A batch of text messages; the middle one's text is `raw_text`, exactly as on the wire."""
    messages = [text_message("Bom dia", ids[0]), text_message(HOLE, ids[1])]
    messages.append(text_message("Até logo", ids[2]))
    return encode(envelope(messages)).replace(HOLE.encode(), raw_text)


@pytest.mark.parametrize(
    ("raw_text", "expected"),
    [
        pytest.param(b"oi \\ud83d tudo bem", "oi \ufffd tudo bem", id="lone-high-surrogate"),
        pytest.param(b"\\ude00 fim", "\ufffd fim", id="lone-low-surrogate"),
        pytest.param(b"\\ud83d\\ud83d\\ude00", "\ufffd\U0001f600", id="lone-before-pair"),
        pytest.param(b"caf\xe9 \xff", "caf\ufffd \ufffd", id="not-utf8"),
    ],
)
async def test_a_message_with_bad_text_is_stored_with_its_batch(
    pyloto: Pyloto, raw_text: bytes, expected: str
) -> None:
    ids = [new_wamid() for _ in range(3)]
    body = batch_with(raw_text, ids)

    assert [m.text for m in parse_webhook(body).messages] == ["Bom dia", expected, "Até logo"]
    response = await pyloto.post(body)
    assert response.status_code == 200, response.text
    assert response.json() == {"created": 3, "duplicates": 0, "statuses": 0, "skipped": 0}
    for message_id in ids:
        assert (await pyloto.wait_for(message_id))["state"] == "sent"


async def test_a_valid_surrogate_pair_is_read_as_its_character(pyloto: Pyloto) -> None:
    message_id = new_wamid()
    body = encode(envelope([text_message(HOLE, message_id)])).replace(
        HOLE.encode(), b"obrigada \\ud83d\\ude4f"
    )
    assert [m.text for m in parse_webhook(body).messages] == ["obrigada \U0001f64f"]
    assert (await pyloto.post(body)).status_code == 200


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(b'{"object": "whatsapp_business_account", "entry": [', id="truncated"),
        pytest.param(b"\\ud83d", id="escape-alone"),
        pytest.param(b'{"object": "whatsapp_business_account", "entry": "\\ud83d"}', id="entry"),
    ],
)
async def test_a_body_that_is_not_a_webhook_even_when_repaired_is_still_refused(
    pyloto: Pyloto, body: bytes
) -> None:
    response = await pyloto.post(body)
    assert response.status_code == 400
    assert await pyloto.records() == {}
