"""Accounts against a real `pyloto serve`: made, listed, signed out and removed by the
`pyloto users` command beside the running server (SQLite and Redis), a session refused on
the task routes, and neither the password nor the account's name in the server's log."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import httpx
import pytest

from tests.e2e.conftest import ServeOnRedis
from tests.e2e.servers import ServeProcess, pyloto_command, sqlite_server
from tests.support.accounts import ACCOUNT, PASSWORD, add_with_cli
from tests.support.redis_server import RedisServer

COOKIE = "pyloto_ops"


def _users(server: ServeProcess, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*pyloto_command(), "users", *args],
        env=server.env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def _sign_in(client: httpx.Client) -> str:
    response = client.post(
        "/ops/login", data={"name": ACCOUNT, "password": PASSWORD}, follow_redirects=False
    )
    assert response.status_code == 303, response.text
    found = re.search(r'name="csrf" value="([^"]+)"', client.get("/ops").text)
    assert found
    return found.group(1)


def _exercise(server: ServeProcess) -> None:
    added = add_with_cli(pyloto_command(), server.env)
    assert added.returncode == 0, added.stderr
    assert PASSWORD not in added.stdout + added.stderr
    again = add_with_cli(pyloto_command(), server.env, role="operator")
    assert again.returncode == 1
    assert "exists already" in again.stderr
    listed = _users(server, "list")
    assert listed.returncode == 0
    assert listed.stdout.split("\t")[:2] == [ACCOUNT, "agent"]
    with httpx.Client(base_url=server.url, timeout=10) as client:
        csrf = _sign_in(client)
        task = client.post(
            "/internal/tasks/advance",
            json={"message_id": "wamid.X", "state": "received"},
            headers={"X-CSRF-Token": csrf, "X-CloudTasks-TaskRetryCount": "7"},
        )
        assert task.status_code == 401  # a person cannot run (or dead-letter) a task
        revoked = _users(server, "revoke", ACCOUNT)
        assert revoked.returncode == 0, revoked.stderr
        assert "ended 1 session" in revoked.stdout
        assert client.get("/ops").status_code == 401
        _sign_in(client)
        removed = _users(server, "remove", ACCOUNT)
        assert removed.returncode == 0, removed.stderr
        assert client.get("/ops").status_code == 401
        refused = client.post("/ops/login", data={"name": ACCOUNT, "password": PASSWORD})
        assert refused.status_code == 401
    assert _users(server, "remove", ACCOUNT).returncode == 1
    server.stop()
    logged = server.log.read_text()
    assert '"audit"' in logged
    assert PASSWORD not in logged
    assert ACCOUNT not in logged


def test_accounts_beside_a_server_on_sqlite(tmp_path: Path) -> None:
    server = sqlite_server(
        tmp_path / "pyloto.db", tmp_path / "server.log", OPS_CONSOLE_ENABLED="true"
    )
    try:
        server.start()
        _exercise(server)
    finally:
        server.cleanup()


def test_accounts_beside_servers_on_redis(
    serve_on_redis: ServeOnRedis, redis_server: RedisServer
) -> None:
    """Made through one instance's store, signed in on it, revoked for every instance."""
    server = serve_on_redis(redis_server, OPS_CONSOLE_ENABLED="true")
    server.start()
    _exercise(server)


@pytest.mark.parametrize("password", ["short", ""])
def test_a_short_password_is_refused_without_being_echoed(tmp_path: Path, password: str) -> None:
    server = sqlite_server(tmp_path / "pyloto.db", tmp_path / "server.log")
    added = add_with_cli(pyloto_command(), server.env, password=password)
    assert added.returncode == 1
    assert "8 to 1024 characters" in added.stderr
    assert (password or "\x00") not in added.stdout
