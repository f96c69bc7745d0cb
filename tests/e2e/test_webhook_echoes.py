"""`pyloto serve` takes coexistence echoes (`smb_message_echoes`) like any webhook: signed or
refused, stored once by their id with kind `echo`."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest

from tests.e2e.servers import ServeProcess, post_webhook, sqlite_server
from tests.support.helpers import (
    INTERNAL_TOKEN,
    encode,
    message_echoes,
    signature,
    text_echo,
)

ECHO_TEXT = "Oi, aqui é a Ana da loja: seu pedido sai hoje."


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServeProcess]:
    """A `pyloto serve` on its own SQLite database."""
    process = sqlite_server(tmp_path / "pyloto.db", tmp_path / "serve.log")
    process.start()
    yield process
    process.stop()
    process.cleanup()


def _record(server: ServeProcess, message_id: str) -> httpx.Response:
    return httpx.get(
        f"{server.url}/internal/messages/{quote(message_id, safe='')}",
        headers={"X-Internal-Token": INTERNAL_TOKEN},
        timeout=5,
    )


def test_a_signed_echo_webhook_is_stored_once_as_an_echo(server: ServeProcess) -> None:
    """The echo is acknowledged, stored under its id with kind `echo`, and its redelivery is
    a duplicate; the business's words are not in the server's log."""
    item = text_echo(ECHO_TEXT)
    payload = message_echoes([item])
    with httpx.Client(timeout=10) as client:
        first = post_webhook(client, server.url, payload)
        again = post_webhook(client, server.url, payload)
    assert first.status_code == 200, first.text
    assert first.json()["created"] == 1
    assert again.status_code == 200
    assert again.json()["created"] == 0
    assert again.json()["duplicates"] == 1
    response = _record(server, item["id"])
    assert response.status_code == 200
    view = response.json()
    assert view["message_id"] == item["id"]
    assert view["inbound"]["kind"] == "echo"
    assert ECHO_TEXT not in server.log.read_text()


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        pytest.param({}, 401, id="unsigned"),
        pytest.param({"X-Hub-Signature-256": "sha256=" + "0" * 64}, 403, id="wrong"),
        pytest.param({"X-Hub-Signature-256": signature(b"{}", "other-secret")}, 403, id="other"),
    ],
)
def test_an_echo_webhook_without_a_valid_signature_is_refused(
    server: ServeProcess, headers: dict[str, str], status: int
) -> None:
    """Echoes go through the webhook's signature check: refused, and nothing is stored."""
    item = text_echo(ECHO_TEXT)
    body = encode(message_echoes([item]))
    response = httpx.post(
        f"{server.url}/webhook",
        content=body,
        headers={"Content-Type": "application/json", **headers},
        timeout=10,
    )
    assert response.status_code == status
    assert _record(server, item["id"]).status_code == 404
