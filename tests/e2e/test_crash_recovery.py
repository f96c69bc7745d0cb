"""A server killed with SIGKILL loses nothing it acknowledged and sends nothing twice."""

from __future__ import annotations

import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.helpers import (
    APP_SECRET,
    INTERNAL_TOKEN,
    VERIFY_TOKEN,
    encode,
    envelope,
    signed_headers,
    text_message,
)

pytestmark = pytest.mark.slow

BATCHES = 8
PER_BATCH = 10


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class Server:
    """`pyloto serve` in a child process on a private database."""

    def __init__(self, database: Path, log: Path) -> None:
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {
            **os.environ,
            "STATE_SQLITE_PATH": str(database),
            "WHATSAPP_APP_SECRET": APP_SECRET,
            "WHATSAPP_VERIFY_TOKEN": VERIFY_TOKEN,
            "INTERNAL_TASK_TOKEN": INTERNAL_TOKEN,
            "LOCAL_QUEUE_MIN_BACKOFF_SECONDS": "0.05",
            "LOCAL_QUEUE_MAX_BACKOFF_SECONDS": "0.5",
        }
        self.log = log
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        command = [sys.executable, "-m", "pyloto_corp.cli", "serve", "--port", str(self.port)]
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(command, env=self.env, stdout=log, stderr=log)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            assert self.process.poll() is None, self.log.read_text()
            try:
                if httpx.get(f"{self.url}/ready", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        raise AssertionError("server did not become ready")

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=15)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    """A server that is stopped at the end of the test, whatever happened."""
    running = Server(tmp_path / "pyloto.db", tmp_path / "server.log")
    yield running
    running.stop()


def _states(database: Path) -> dict[str, str]:
    with sqlite3.connect(database) as conn:
        return dict(conn.execute("SELECT message_id, state FROM records").fetchall())


def _sends(database: Path) -> dict[str, int]:
    with sqlite3.connect(database) as conn:
        rows = conn.execute(
            "SELECT callback_data, COUNT(*) FROM dry_run_outbox GROUP BY callback_data"
        ).fetchall()
    return {str(message_id): int(count) for message_id, count in rows}


def _post_batches(url: str) -> list[str]:
    acknowledged = []
    with httpx.Client(timeout=10) as client:
        for _ in range(BATCHES):
            messages = [text_message("Quero saber o preço, por favor") for _ in range(PER_BATCH)]
            body = encode(envelope(messages))
            response = client.post(f"{url}/webhook", content=body, headers=signed_headers(body))
            assert response.status_code == 200
            acknowledged += [message["id"] for message in messages]
    return acknowledged


def _wait_all_sent(database: Path, ids: list[str], seconds: float) -> dict[str, str]:
    deadline = time.monotonic() + seconds
    states = _states(database)
    while time.monotonic() < deadline:
        states = _states(database)
        if all(states.get(message_id) == "sent" for message_id in ids):
            break
        time.sleep(0.1)
    return states


def test_sigkill_after_ack_then_restart_sends_each_reply_exactly_once(
    server: Server, tmp_path: Path
) -> None:
    """Acknowledged messages all reach `sent` after two SIGKILLs, each with one outbox row."""
    database = tmp_path / "pyloto.db"
    server.start()
    acknowledged = _post_batches(server.url)
    server.kill()  # the outbound queue drains 10 sends a second: most replies are pending
    unfinished = [m for m, state in _states(database).items() if state != "sent"]
    assert set(_states(database)) == set(acknowledged), "every acknowledged message is stored"
    assert unfinished, "the kill came before the pipeline finished, so recovery is exercised"

    server.start()
    time.sleep(1.0)
    server.kill()  # a second crash, this time mid-recovery

    server.start()
    states = _wait_all_sent(database, acknowledged, seconds=60)
    assert {m: states.get(m) for m in acknowledged} == dict.fromkeys(acknowledged, "sent")
    sends = _sends(database)
    assert sends == dict.fromkeys(acknowledged, 1), "each reply was sent exactly once"


def test_second_server_on_the_same_database_refuses_to_start(
    server: Server, tmp_path: Path
) -> None:
    """Two processes never serve one SQLite file: the second exits with a clear error."""
    server.start()
    second = Server(tmp_path / "pyloto.db", tmp_path / "second.log")
    command = [sys.executable, "-m", "pyloto_corp.cli", "serve", "--port", str(second.port)]
    result = subprocess.run(command, env=second.env, capture_output=True, timeout=30, check=False)
    assert result.returncode != 0
    assert b"in use by another pyloto process" in result.stdout + result.stderr
