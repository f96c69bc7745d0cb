"""GET /webhook: Meta's subscription handshake."""

from __future__ import annotations

import pytest
from litestar.testing import AsyncTestClient

from tests.support.helpers import VERIFY_TOKEN

pytestmark = pytest.mark.anyio


async def test_right_token_echoes_the_challenge_as_plain_text(
    client: AsyncTestClient,  # type: ignore[type-arg]
) -> None:
    """hub.mode=subscribe with the configured token → 200 and the challenge as text/plain."""
    params = {
        "hub.mode": "subscribe",
        "hub.verify_token": VERIFY_TOKEN,
        "hub.challenge": "1158201444",
    }
    response = await client.get("/webhook", params=params)
    assert response.status_code == 200
    assert response.text == "1158201444"
    assert response.headers["content-type"].startswith("text/plain")


@pytest.mark.parametrize(
    "params",
    [
        pytest.param(
            {"hub.mode": "subscribe", "hub.verify_token": "wrong", "hub.challenge": "42"},
            id="wrong-token",
        ),
        pytest.param(
            {
                "hub.mode": "subscribe",
                "hub.verify_token": VERIFY_TOKEN + "x",
                "hub.challenge": "42",
            },
            id="token-with-suffix",
        ),
        pytest.param(
            {"hub.mode": "unsubscribe", "hub.verify_token": VERIFY_TOKEN, "hub.challenge": "42"},
            id="wrong-mode",
        ),
        pytest.param({"hub.verify_token": VERIFY_TOKEN, "hub.challenge": "42"}, id="no-mode"),
        pytest.param({"hub.mode": "subscribe", "hub.challenge": "42"}, id="no-token"),
        pytest.param(
            {"hub.mode": "subscribe", "hub.verify_token": "", "hub.challenge": "42"},
            id="empty-token",
        ),
        pytest.param(
            {"hub.mode": "subscribe", "hub.verify_token": VERIFY_TOKEN}, id="no-challenge"
        ),
        pytest.param({}, id="no-params"),
    ],
)
async def test_anything_but_the_right_handshake_is_forbidden(
    client: AsyncTestClient,  # type: ignore[type-arg]
    params: dict[str, str],
) -> None:
    """Wrong token, wrong mode or a missing parameter → 403, and the challenge is not echoed."""
    response = await client.get("/webhook", params=params)
    assert response.status_code == 403
    assert response.text != "42"
