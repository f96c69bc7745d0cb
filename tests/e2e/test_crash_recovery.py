"""A server killed with SIGKILL loses nothing it acknowledged and sends nothing twice."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
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

pytestmark = pytest.mark.slow

BATCHES = 8
PER_BATCH = 10


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServeProcess]:
    """A server that is stopped at the end of the test, whatever happened."""
    running = sqlite_server(tmp_path / "pyloto.db", tmp_path / "server.log")
    yield running
    running.stop()


def _states(database: Path) -> dict[str, str]:
    with sqlite3.connect(database) as conn:
        return dict(conn.execute("SELECT message_id, state FROM records").fetchall())


def _sends(database: Path) -> Counter[str]:
    """Dry-run sends by the record they answer (the message they reply to in context)."""
    with sqlite3.connect(database) as conn:
        rows = conn.execute("SELECT body FROM dry_run_outbox").fetchall()
    return Counter(json.loads(body)["context"]["message_id"] for (body,) in rows)


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
    server: ServeProcess, tmp_path: Path
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
    restarted = time.monotonic()
    states = _wait_all_sent(database, acknowledged, seconds=60)
    last_sent = time.monotonic() - restarted
    sends = _sends(database)
    print(
        f"\nsqlite kill -9 (twice): {len(acknowledged)} acknowledged, {len(unfinished)} unsent "
        f"at the first kill, {sum(s == 'sent' for s in states.values())} sent, "
        f"{sum(n - 1 for n in sends.values())} duplicates, last reply sent {last_sent:.1f} s "
        "after the final restart"
    )
    assert {m: states.get(m) for m in acknowledged} == dict.fromkeys(acknowledged, "sent")
    assert sends == dict.fromkeys(acknowledged, 1), "each reply was sent exactly once"


def test_second_server_on_the_same_database_refuses_to_start(
    server: ServeProcess, tmp_path: Path
) -> None:
    """Two processes never serve one SQLite file: the second exits with a clear error."""
    server.start()
    second = sqlite_server(tmp_path / "pyloto.db", tmp_path / "second.log")
    result = subprocess.run(
        second.command, env=second.env, capture_output=True, timeout=30, check=False
    )
    assert result.returncode != 0
    assert result.stdout == b"", "refused before anything started"
    assert b"is in use by another `pyloto serve`" in result.stderr
    assert result.stderr.count(b"\n") == 1, "one line, no traceback"
