"""Status webhooks (sent/delivered/read/failed) about our replies: monotonic and correlated."""

from __future__ import annotations

from typing import Any

import pytest

from tests.e2e.support import Pyloto
from tests.support.helpers import envelope, status, text_message

pytestmark = pytest.mark.anyio


async def _sent_message(pyloto: Pyloto) -> dict[str, Any]:
    message = text_message("Qual o prazo de entrega?")
    assert (await pyloto.post(envelope([message]))).status_code == 200
    view = await pyloto.wait_for(message["id"], {"sent"})
    assert view["outbound_message_id"], "the dry-run outbox returned an outbound wamid"
    assert view["delivery_status"] is None
    return view


async def test_statuses_out_of_order_never_move_backwards(pyloto: Pyloto) -> None:
    """read, then delivered, then sent (separate POSTs) → delivery_status stays `read`."""
    view = await _sent_message(pyloto)
    outbound = view["outbound_message_id"]
    for number, state in enumerate(["read", "delivered", "sent"]):
        response = await pyloto.post(
            envelope(statuses=[status(outbound, state, 1732500010 - number)])
        )
        assert response.status_code == 200
        assert response.json()["statuses"] == 1
        assert (await pyloto.view(view["message_id"]))["delivery_status"] == "read"


async def test_statuses_in_one_batch_out_of_order_keep_the_latest(pyloto: Pyloto) -> None:
    """delivered, read, sent in one POST → `read`; the record stays `sent`."""
    view = await _sent_message(pyloto)
    outbound = view["outbound_message_id"]
    items = [status(outbound, s, 1732500020) for s in ("delivered", "read", "sent")]
    assert (await pyloto.post(envelope(statuses=items))).status_code == 200
    after = await pyloto.view(view["message_id"])
    assert after["delivery_status"] == "read"
    assert after["state"] == "sent"


async def test_statuses_in_order_move_forward(pyloto: Pyloto) -> None:
    """sent → delivered → read each show up as they arrive."""
    view = await _sent_message(pyloto)
    outbound = view["outbound_message_id"]
    for state in ("sent", "delivered", "read"):
        assert (
            await pyloto.post(envelope(statuses=[status(outbound, state, 1)]))
        ).status_code == 200
        assert (await pyloto.view(view["message_id"]))["delivery_status"] == state


async def test_status_before_the_send_is_shown_once_the_record_is_sent(pyloto: Pyloto) -> None:
    """A status whose biz_opaque_callback_data is the inbound wamid, received before the reply
    was sent (even before the message itself), is shown on the record once it is `sent`."""
    message = text_message("Vocês têm estacionamento?")
    early = status("wamid.OUTBOUND.EARLY", "delivered", 1732500030, callback=message["id"])
    response = await pyloto.post(envelope(statuses=[early]))
    assert response.status_code == 200
    assert response.json()["statuses"] == 1
    assert (await pyloto.get_view(message["id"])).status_code == 404

    assert (await pyloto.post(envelope([message]))).status_code == 200
    view = await pyloto.wait_for(message["id"], {"sent"})
    assert view["delivery_status"] == "delivered"

    # A later status about the actual outbound id still moves it forward.
    read = status(view["outbound_message_id"], "read", 1732500040)
    assert (await pyloto.post(envelope(statuses=[read]))).status_code == 200
    assert (await pyloto.view(message["id"]))["delivery_status"] == "read"


async def test_failed_status_is_shown_with_its_error_code(pyloto: Pyloto) -> None:
    """A `failed` status with errors → delivery_status `failed` and the error code on the record."""
    view = await _sent_message(pyloto)
    failed = status(view["outbound_message_id"], "failed", 1732500050)
    failed["errors"] = [
        {
            "code": 131026,
            "title": "Message undeliverable",
            "message": "Message undeliverable",
            "error_data": {"details": "Message Undeliverable."},
            "href": "https://developers.facebook.com/docs/whatsapp/cloud-api/support/error-codes/",
        }
    ]
    assert (await pyloto.post(envelope(statuses=[failed]))).status_code == 200
    after = await pyloto.view(view["message_id"])
    assert after["delivery_status"] == "failed"
    assert [error["code"] for error in after["delivery_errors"]] == [131026]
    assert after["state"] == "sent", "a delivery failure does not rewrite the record's state"

    # `failed` outranks anything that arrives after it.
    late = status(view["outbound_message_id"], "read", 1732500060)
    assert (await pyloto.post(envelope(statuses=[late]))).status_code == 200
    assert (await pyloto.view(view["message_id"]))["delivery_status"] == "failed"


async def test_statuses_for_unknown_messages_and_unknown_values_are_accepted(
    pyloto: Pyloto,
) -> None:
    """Statuses about messages we never sent, or with an unknown status value → 200, no record."""
    items = [
        status("wamid.NEVER.SENT", "delivered", 1),
        status("wamid.NEVER.SENT.2", "deleted", 1),
        status("wamid.NEVER.SENT.3", "warning", 1),
    ]
    response = await pyloto.post(envelope(statuses=items))
    assert response.status_code == 200
    assert await pyloto.records() == {}
