"""The shortest path: one signed text webhook ends in `sent` with a template reply."""

from __future__ import annotations

from typing import Any

import anyio
import pytest
from litestar.testing import AsyncTestClient

from tests.support.helpers import INTERNAL_TOKEN, encode, envelope, signed_headers, text_message

pytestmark = pytest.mark.anyio


async def test_text_message_reaches_sent(client: AsyncTestClient) -> None:  # type: ignore[type-arg]
    """A text message goes received → deduped → fallback → queued_outbound → sending → sent."""
    message = text_message("Olá, quero saber o preço")
    body = encode(envelope([message]))
    response = await client.post("/webhook", content=body, headers=signed_headers(body))
    assert response.status_code == 200
    view: dict[str, Any] = {}
    with anyio.fail_after(10):
        while view.get("state") != "sent":
            got = await client.get(
                f"/internal/messages/{message['id']}", headers={"X-Internal-Token": INTERNAL_TOKEN}
            )
            view = got.json()
            await anyio.sleep(0.01)
    states = [view["history"][0]["from"]] + [h["to"] for h in view["history"]]
    assert states == ["received", "deduped", "fallback", "queued_outbound", "sending", "sent"]
