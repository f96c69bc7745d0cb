"""`pyloto serve` says where it listens, and stops on SIGINT (Ctrl-C) or SIGTERM in one line
with exit code 0, idle or under load, losing nothing it acknowledged."""

from __future__ import annotations

import json
import signal
import socket
import sqlite3
import threading
import time
from collections import Counter
from pathlib import Path

import httpx
import pytest

from tests.e2e.servers import ServeProcess, sqlite_server
from tests.support.helpers import (
    encode,
    envelope,
    signed_headers,
    text_message,
)

STOPS = [pytest.param(signal.SIGINT, id="SIGINT"), pytest.param(signal.SIGTERM, id="SIGTERM")]
POSTERS = 4
POSTS_A_SECOND = 15  # each poster's; the outbound queue sends 10 replies a second
MIN_ACKNOWLEDGED = 40  # webhooks answered before the stop signal


def _stop(server: ServeProcess, signum: int) -> tuple[int, str]:
    """Send `signum`, wait; the exit code and what the process wrote after the signal."""
    assert server.process is not None
    before = len(server.log.read_bytes())
    server.process.send_signal(signum)
    code = server.process.wait(timeout=30)
    return code, server.log.read_bytes()[before:].decode()


def _lines(text: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


@pytest.mark.parametrize("signum", STOPS)
@pytest.mark.parametrize("ops", [False, True], ids=["", "ops"])
def test_idle_server_names_its_url_then_stops_in_one_line(
    servers: list[ServeProcess], tmp_path: Path, signum: int, ops: bool
) -> None:
    """One start-up line names the URL (and the console's when enabled) instead of uvicorn's
    lines; a stop signal ends the process with code 0, one line and no traceback."""
    server = sqlite_server(
        tmp_path / "pyloto.db", tmp_path / "server.log", OPS_CONSOLE_ENABLED=str(ops).lower()
    )
    servers.append(server)
    server.start("/health")
    started = _lines(server.log.read_text())
    serving = [line for line in started if line.get("event") == "serving"]
    assert len(serving) == 1, started
    [line] = serving
    assert line["severity"] == "INFO"
    assert line["url"] == server.url
    message = str(line["message"])
    assert message.startswith(f"pyloto serving on {server.url}"), message
    if ops:
        assert line["ops_url"] == f"{server.url}/ops"
        assert f"{server.url}/ops" in message
    else:
        assert "ops_url" not in line
        assert "/ops" not in message
    # The console is there when named (its sign-in: 401 without a session), else not.
    console = httpx.get(f"{server.url}/ops", timeout=5).status_code
    assert console == (401 if ops else 404)
    assert not [entry for entry in started if str(entry["logger"]).startswith("uvicorn")], started

    code, after = _stop(server, signum)
    log = server.log.read_text()
    assert code == 0, log
    assert "Traceback" not in log, log
    [stopped] = _lines(after)
    assert stopped["message"] == "pyloto stopped", after
    assert stopped["signals"] == [signal.Signals(signum).name]


def _post_until(url: str, stop: threading.Event, answered: list[str]) -> None:
    """Post one-message webhooks at a steady pace until `stop` (or the server is gone);
    append the id of each answered 200."""
    with httpx.Client(timeout=10) as client:
        while not stop.is_set():
            message = text_message("Quero saber o preço, por favor")
            body = encode(envelope([message]))
            try:
                response = client.post(f"{url}/webhook", content=body, headers=signed_headers(body))
            except httpx.HTTPError:
                time.sleep(0.02)  # stopping: refused or cut off, so not acknowledged
                continue
            if response.status_code == 200:
                answered.append(message["id"])
            time.sleep(1 / POSTS_A_SECOND)


def _states(database: Path) -> dict[str, str]:
    with sqlite3.connect(database) as conn:
        return dict(conn.execute("SELECT message_id, state FROM records").fetchall())


def _sends(database: Path) -> Counter[str]:
    """Dry-run sends by the record they answer (the message they reply to in context)."""
    with sqlite3.connect(database) as conn:
        rows = conn.execute("SELECT body FROM dry_run_outbox").fetchall()
    return Counter(json.loads(body)["context"]["message_id"] for (body,) in rows)


@pytest.mark.slow
@pytest.mark.parametrize("signum", STOPS)
def test_a_stop_under_load_is_clean_and_loses_nothing_acknowledged(
    servers: list[ServeProcess], tmp_path: Path, signum: int
) -> None:
    """Webhooks keep coming while the server is stopped: it still exits 0 without a
    traceback, and after a restart on the same database every webhook it answered 200 is
    stored and its reply sent, once."""
    database = tmp_path / "pyloto.db"
    first = sqlite_server(database, tmp_path / "first.log")
    servers.append(first)
    first.start()
    stop = threading.Event()
    answered: list[list[str]] = [[] for _ in range(POSTERS)]
    posters = [
        threading.Thread(target=_post_until, args=(first.url, stop, ids), daemon=True)
        for ids in answered
    ]
    for poster in posters:
        poster.start()
    # Stop mid-stream: once a few dozen are in (however busy the machine is).
    deadline = time.monotonic() + 30
    while sum(map(len, answered)) < MIN_ACKNOWLEDGED and time.monotonic() < deadline:
        time.sleep(0.05)
    try:
        code, after = _stop(first, signum)  # the posters keep going through the shutdown
    finally:
        stop.set()
        for poster in posters:
            poster.join(timeout=15)
    log = first.log.read_text()
    assert code == 0, log
    assert "Traceback" not in log, log
    assert _lines(after)[-1]["event"] == "stopped", after
    acknowledged = [message_id for ids in answered for message_id in ids]
    assert len(acknowledged) >= MIN_ACKNOWLEDGED, "the load ran"
    states = _states(database)
    assert set(acknowledged) <= set(states), "every acknowledged webhook is stored"
    assert [m for m in acknowledged if states[m] != "sent"], "the stop cut the pipeline short"

    second = sqlite_server(database, tmp_path / "second.log")
    servers.append(second)
    second.start()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        states = _states(database)
        if all(states[m] == "sent" for m in acknowledged):
            break
        time.sleep(0.2)
    assert {m: states[m] for m in acknowledged if states[m] != "sent"} == {}
    sends = _sends(database)
    assert {m: sends[m] for m in acknowledged if sends[m] != 1} == {}, "one reply each"
    code, _ = _stop(second, signum)
    assert code == 0, second.log.read_text()


class _SilentRedis:
    """A TCP server that accepts connections and never answers: a Redis slow to reply."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.accepted = threading.Event()
        self.connections: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                connection, _ = self.listener.accept()
            except OSError:
                return
            self.connections.append(connection)
            self.accepted.set()

    def close(self) -> None:
        for connection in self.connections:
            connection.close()
        self.listener.close()


@pytest.mark.parametrize("signum", STOPS)
def test_a_stop_before_serving_is_one_line_and_exit_zero(
    servers: list[ServeProcess], tmp_path: Path, signum: int
) -> None:
    """Stopped while start-up waits on its store (here a Redis that never answers the
    durability check), `pyloto serve` ends with code 0 and one line, no traceback."""
    redis = _SilentRedis()
    try:
        server = sqlite_server(
            tmp_path / "unused.db",
            tmp_path / "server.log",
            STATE_BACKEND="redis",
            REDIS_URL=f"redis://127.0.0.1:{redis.port}/0",
            REDIS_TIMEOUT_SECONDS="30",
        )
        servers.append(server)
        server.launch()
        assert server.process is not None
        deadline = time.monotonic() + 60
        while not redis.accepted.wait(0.1):
            assert server.process.poll() is None, server.log.read_text()
            assert time.monotonic() < deadline, server.log.read_text()
        time.sleep(0.2)  # the check's command is written and waits for its answer
        assert server.process.poll() is None, server.log.read_text()
        code, after = _stop(server, signum)
    finally:
        redis.close()
    log = server.log.read_text()
    assert code == 0, log
    assert "Traceback" not in log, log
    assert after.strip() == "pyloto: stopped before serving", log
