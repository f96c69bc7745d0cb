"""/internal routes (task callbacks, inspection) and /health, /ready."""

from __future__ import annotations

import json
from typing import Any

import pytest
from litestar.testing import AsyncTestClient

from pyloto_corp import __version__
from pyloto_corp.domain.replies import reply_key
from tests.e2e.support import FALLBACK_PATH, Pyloto, trajectory
from tests.support.helpers import CONTACT_NAME, INTERNAL_TOKEN, SENDER, envelope, text_message

pytestmark = pytest.mark.anyio

TOKEN = {"X-Internal-Token": INTERNAL_TOKEN}
ADVANCE = "/internal/tasks/advance"


async def _call(
    client: AsyncTestClient,  # type: ignore[type-arg]
    route: str,
    headers: dict[str, str],
) -> int:
    if route == "advance":
        body = {"message_id": "wamid.ANY", "state": "received"}
        response = await client.post(ADVANCE, json=body, headers=headers)
    else:
        response = await client.get("/internal/messages/wamid.ANY", headers=headers)
    return response.status_code


@pytest.mark.parametrize("route", ["advance", "inspect"])
async def test_internal_routes_need_the_token(
    client: AsyncTestClient,  # type: ignore[type-arg]
    route: str,
) -> None:
    """No X-Internal-Token → 401; a wrong (or empty, or prefixed) one → 403 (or 401 when empty)."""
    assert await _call(client, route, {}) == 401
    assert await _call(client, route, {"X-Internal-Token": "wrong"}) == 403
    assert await _call(client, route, {"X-Internal-Token": INTERNAL_TOKEN + "x"}) == 403
    assert await _call(client, route, {"X-Internal-Token": INTERNAL_TOKEN[:-1]}) == 403
    assert await _call(client, route, {"X-Internal-Token": ""}) in (401, 403)
    assert await _call(client, route, {"X-Hub-Signature-256": INTERNAL_TOKEN}) == 401


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(b"", id="empty"),
        pytest.param(b"not json", id="not-json"),
        pytest.param(b"null", id="null"),
        pytest.param(b"[]", id="array"),
        pytest.param(b"{}", id="empty-object"),
        pytest.param(b'{"message_id": "wamid.X"}', id="no-state"),
        pytest.param(b'{"state": "received"}', id="no-message-id"),
        pytest.param(b'{"message_id": 1, "state": "received"}', id="id-number"),
        pytest.param(b'{"message_id": "wamid.X", "state": null}', id="state-null"),
        pytest.param(b'{"message_id": "wamid.X", "state": "received", "x": 1}', id="extra-field"),
        pytest.param(b"[" * 50_000 + b"]" * 50_000, id="deep"),
    ],
)
async def test_advance_with_a_bad_body_is_a_bad_request(
    client: AsyncTestClient,  # type: ignore[type-arg]
    body: bytes,
) -> None:
    """A task body that is not {message_id, state} → 400 (never 500)."""
    response = await client.post(
        ADVANCE, content=body, headers={**TOKEN, "Content-Type": "application/json"}
    )
    assert response.status_code == 400, response.text


async def test_advance_of_a_record_past_the_state_is_a_stale_no_op(pyloto: Pyloto) -> None:
    """Redelivered tasks for steps already done → 200 "stale"; nothing changes, nothing re-sent."""
    message = text_message("Quero cancelar meu pedido")
    assert (await pyloto.post(envelope([message]))).status_code == 200
    before = await pyloto.wait_for(message["id"], {"sent"})
    await pyloto.wait_idle()
    for state in ("received", "deduped", "fallback", "queued_outbound", "llm1", "no-such-state"):
        body = {"message_id": message["id"], "state": state}
        response = await pyloto.client.post(ADVANCE, json=body, headers=TOKEN)
        assert response.status_code == 200, response.text
        assert response.json() == {"outcome": "stale"}
    after = await pyloto.view(message["id"])
    assert after["version"] == before["version"]
    assert after["history"] == before["history"]
    assert len(await pyloto.sent_for(message["id"])) == 1


@pytest.mark.parametrize("terminal", ["sent", "ignored"])
async def test_advance_naming_the_terminal_state_the_record_is_in_is_a_no_op(
    pyloto: Pyloto, terminal: str
) -> None:
    """A task for a terminal record naming that very state → 2xx no-op, never 500."""
    message = text_message("Oi")
    if terminal == "ignored":
        del message["text"]
        message.update({"type": "reaction", "reaction": {"message_id": "wamid.Y", "emoji": "❤"}})
    assert (await pyloto.post(envelope([message]))).status_code == 200
    before = await pyloto.wait_for(message["id"], {terminal})
    body = {"message_id": message["id"], "state": terminal}
    response = await pyloto.client.post(ADVANCE, json=body, headers=TOKEN)
    assert response.status_code == 200, response.text
    assert (await pyloto.view(message["id"]))["version"] == before["version"]


async def test_advance_of_an_unknown_record_is_acknowledged(
    client: AsyncTestClient,  # type: ignore[type-arg]
) -> None:
    """A task for a wamid that was never stored → 200 (Cloud Tasks must not retry it forever)."""
    body = {"message_id": "wamid.NEVER.STORED", "state": "received"}
    response = await client.post(
        ADVANCE, json=body, headers={**TOKEN, "X-CloudTasks-TaskRetryCount": "3"}
    )
    assert response.status_code == 200
    assert response.json() == {"outcome": "unknown"}


async def test_inspect_of_an_unknown_id_is_not_found(
    client: AsyncTestClient,  # type: ignore[type-arg]
) -> None:
    """GET /internal/messages/<unknown> → 404 with a JSON error."""
    response = await client.get("/internal/messages/wamid.NOPE", headers=TOKEN)
    assert response.status_code == 404
    assert response.json()["status_code"] == 404


def _all_strings(value: Any) -> list[str]:
    if isinstance(value, dict):
        return [s for k, v in value.items() for s in (str(k), *_all_strings(v))]
    if isinstance(value, list):
        return [s for item in value for s in _all_strings(item)]
    return [str(value)]


async def test_inspect_shows_the_record_without_personal_data(pyloto: Pyloto) -> None:
    """The view has message_id, state, history (from/to/at), the Graph API reply and
    delivery_status; neither the sender's number nor the contact's name appears in it."""
    text = f"Oi, aqui é {CONTACT_NAME}, meu número é +55 11 98765-4321. Quero o preço."
    message = text_message(text)
    assert (await pyloto.post(envelope([message]))).status_code == 200
    await pyloto.wait_for(message["id"], {"sent"})
    response = await pyloto.get_view(message["id"])
    assert response.status_code == 200
    view = response.json()

    assert view["message_id"] == message["id"]
    assert view["state"] == "sent"
    assert trajectory(view) == FALLBACK_PATH
    for step in view["history"]:
        assert {"from", "to", "at"} <= step.keys()
        assert isinstance(step["at"], float | int)
    reply = view["reply"]
    assert reply["messaging_product"] == "whatsapp"
    assert reply["type"] == "text"
    assert reply["context"] == {"message_id": message["id"]}
    assert reply["biz_opaque_callback_data"] == reply_key(message["id"])
    assert reply["text"]["body"]
    assert "delivery_status" in view

    raw = response.text
    everything = " ".join(_all_strings(view))
    for secret in (SENDER, "98765-4321", "987654321", CONTACT_NAME, *CONTACT_NAME.split()):
        assert secret not in raw, f"{secret!r} leaked into the inspect JSON"
        assert secret.lower() not in everything.lower(), f"{secret!r} leaked (decoded)"
    assert reply["to"] != SENDER
    assert reply["to"].endswith(SENDER[-4:]), "masked, last 4 kept"

    # The dry-run outbox still holds the real recipient: only the view is masked.
    [sent] = await pyloto.sent_for(message["id"])
    assert sent["to"] == SENDER
    assert json.dumps(sent["text"]) == json.dumps(reply["text"])


async def test_health_answers_status_and_version(
    client: AsyncTestClient,  # type: ignore[type-arg]
) -> None:
    """GET /health → 200 {status: ok, version} without any token."""
    response = await client.get("/health")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "version": __version__}


async def test_ready_when_running(client: AsyncTestClient) -> None:  # type: ignore[type-arg]
    """GET /ready → 200 while the store and the queue answer."""
    response = await client.get("/ready")
    assert response.status_code == 200
    assert response.json()["status"] == "ok"


async def test_unknown_routes_and_methods_are_client_errors(
    client: AsyncTestClient,  # type: ignore[type-arg]
) -> None:
    """Unknown paths → 404, wrong methods → 405: client errors, not 500."""
    assert (await client.get("/nope")).status_code == 404
    assert (await client.put("/webhook", content=b"{}")).status_code == 405
    assert (await client.delete("/health")).status_code == 405
    assert (await client.get(ADVANCE, headers=TOKEN)).status_code == 405
