"""Slow or stalled clients are closed; the server keeps answering everyone else meanwhile.

A real `pyloto serve` with REQUEST_READ_TIMEOUT_SECONDS=1, and raw sockets that connect and
send nothing, stop in the middle of their headers, or send headers and then part of a body.
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from pyloto_corp.cli import message_url
from pyloto_corp.http.rejections import LINES_PER_WINDOW
from tests.e2e.servers import ServeProcess, process_env
from tests.support.helpers import (
    APP_SECRET,
    INTERNAL_TOKEN,
    VERIFY_TOKEN,
    encode,
    envelope,
    signed_headers,
    text_message,
)

READ_TIMEOUT = 1.0
# Only a guard against a hang: a closed connection is noticed well within it.
GIVE_UP_SECONDS = 15.0
STALLED = 50


def _serve(directory: Path) -> ServeProcess:
    """`pyloto serve` with a 1 s read deadline, started; the caller cleans it up."""
    variables = {
        "STATE_SQLITE_PATH": str(directory / "pyloto.db"),
        "WHATSAPP_APP_SECRET": APP_SECRET,
        "WHATSAPP_VERIFY_TOKEN": VERIFY_TOKEN,
        "INTERNAL_TASK_TOKEN": INTERNAL_TOKEN,
        "REQUEST_READ_TIMEOUT_SECONDS": str(READ_TIMEOUT),
    }
    served = ServeProcess(process_env(variables), directory / "server.log")
    served.start("/health")
    return served


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServeProcess]:
    """`pyloto serve` with a 1 s read deadline, shared by this module's tests (each test's
    clients are its own); killed at the end."""
    served = _serve(tmp_path_factory.mktemp("slow-clients"))
    yield served
    served.cleanup()


def connect(server: ServeProcess, first_bytes: bytes) -> socket.socket:
    """A client that sends `first_bytes` and then nothing more."""
    client = socket.create_connection(("127.0.0.1", server.port), timeout=GIVE_UP_SECONDS)
    if first_bytes:
        client.sendall(first_bytes)
    return client


def closed_by_server(client: socket.socket) -> bool:
    """Whether the server closed the connection (reads until EOF; False on the guard's timeout)."""
    try:
        while client.recv(4096):
            pass
    except TimeoutError:
        return False
    except ConnectionResetError:
        return True
    return True


def webhook_request(body: bytes) -> bytes:
    """A signed POST /webhook of `body`, as bytes on the wire."""
    headers = signed_headers(body)
    head = (
        "POST /webhook HTTP/1.1\r\nHost: pyloto\r\n"
        f"Content-Type: {headers['Content-Type']}\r\n"
        f"X-Hub-Signature-256: {headers['X-Hub-Signature-256']}\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


def partial_body_request() -> bytes:
    """A webhook request cut in the middle of its body."""
    body = encode(envelope([text_message("Oi")]))
    return webhook_request(body)[: -len(body) // 2]


@pytest.mark.parametrize(
    "first_bytes",
    [
        pytest.param(b"", id="silent"),
        pytest.param(b"POST /webhook HTTP/1.1\r\nHost: pyl", id="half-headers"),
        pytest.param(partial_body_request(), id="half-body"),
    ],
)
def test_a_stalled_client_is_closed(server: ServeProcess, first_bytes: bytes) -> None:
    with connect(server, first_bytes) as client:
        assert closed_by_server(client)
    log = server.log.read_text()
    assert "slow_client_closed" in log
    assert "Traceback" not in log


def test_many_stalled_clients_do_not_stop_the_server_answering(server: ServeProcess) -> None:
    stalled = [connect(server, partial_body_request()) for _ in range(STALLED)]
    try:
        with httpx.Client(base_url=server.url, timeout=GIVE_UP_SECONDS) as http:
            assert http.get("/health").status_code == 200
            body = encode(envelope([text_message("Oi")]))
            assert (
                http.post("/webhook", content=body, headers=signed_headers(body)).json()["created"]
                == 1
            )
        assert all(closed_by_server(client) for client in stalled)
    finally:
        for client in stalled:
            client.close()


def test_a_slow_client_within_the_deadline_and_kept_alive_connections_are_served(
    server: ServeProcess,
) -> None:
    request = webhook_request(encode(envelope([text_message("Oi")])))
    with connect(server, request[: len(request) // 3]) as client:
        time.sleep(READ_TIMEOUT / 4)
        client.sendall(request[len(request) // 3 :])
        assert client.recv(4096).startswith(b"HTTP/1.1 200 ")
    with httpx.Client(base_url=server.url, timeout=GIVE_UP_SECONDS) as http:
        for _ in range(3):  # one connection, idle between requests for longer than nothing
            assert http.get("/health").status_code == 200
            time.sleep(READ_TIMEOUT / 2)


def test_a_chunked_body_past_the_limit_is_refused_as_it_arrives(server: ServeProcess) -> None:
    """A body without Content-Length (chunked) growing past WEBHOOK_MAX_BODY_BYTES (3 MB by
    default) → 413 and nothing stored: the cap holds on what is read, not on what the
    client announces; the server answers the next request."""
    message = text_message("Oi")
    body = encode(envelope([message])) + b" " * (3 * 1024 * 1024 + 1)

    def chunks() -> Iterator[bytes]:
        for start in range(0, len(body), 256 * 1024):
            yield body[start : start + 256 * 1024]

    with httpx.Client(base_url=server.url, timeout=GIVE_UP_SECONDS) as http:
        response = http.post("/webhook", content=chunks(), headers=signed_headers(body))
        assert response.status_code == 413
        assert response.json() == {"status_code": 413, "detail": "Request Entity Too Large"}
        small = encode(envelope([text_message("Oi")]))
        assert http.post("/webhook", content=small, headers=signed_headers(small)).json() == {
            "created": 1,
            "duplicates": 0,
            "statuses": 0,
            "skipped": 0,
        }
        headers = {"X-Internal-Token": INTERNAL_TOKEN}
        small_id = json.loads(small)["entry"][0]["changes"][0]["value"]["messages"][0]["id"]
        assert http.get(message_url("", small_id), headers=headers).status_code == 200
        assert http.get(message_url("", message["id"]), headers=headers).status_code == 404


def test_a_flood_of_stalled_clients_is_logged_a_few_times(tmp_path: Path) -> None:
    """Thirty clients closed at their deadline, on a server of this test's own: every one is
    closed, and only the rate limit's share of `slow_client_closed` lines is written (a
    flood cannot fill the log); the server answers meanwhile."""
    served = _serve(tmp_path)
    try:
        stalled = [connect(served, partial_body_request()) for _ in range(30)]
        try:
            assert all(closed_by_server(client) for client in stalled)
            with httpx.Client(base_url=served.url, timeout=GIVE_UP_SECONDS) as http:
                assert http.get("/health").status_code == 200
        finally:
            for client in stalled:
                client.close()
    finally:
        served.cleanup()
    lines = [line for line in served.log.read_text().splitlines() if "slow_client_closed" in line]
    assert 1 <= len(lines) <= LINES_PER_WINDOW, len(lines)
