"""/ops on a real `pyloto serve` with the console off: a 404 that says how to turn it on."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.e2e.servers import ServeProcess, process_env
from tests.support.helpers import APP_SECRET, INTERNAL_TOKEN, VERIFY_TOKEN

BROWSER = {"Accept": "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"}


@pytest.fixture
def served(cli_env: dict[str, str], tmp_path: Path) -> Iterator[ServeProcess]:
    """A server on the test's database, without OPS_CONSOLE_ENABLED."""
    assert "OPS_CONSOLE_ENABLED" not in cli_env
    server = ServeProcess(process_env(cli_env), tmp_path / "server.log")
    server.start("/health")
    yield server
    server.cleanup()


@pytest.mark.parametrize(
    "path", ["/ops", "/ops/", "/ops/login", "/ops/dead-letters", "/ops/inbox/x%2Fy", "/ops/a/b/c"]
)
def test_a_browser_gets_a_page_saying_the_console_is_off(served: ServeProcess, path: str) -> None:
    """Every /ops path answers 404 with a small HTML page naming the setting to turn the
    console on and the command that makes an account; nothing of the instance."""
    response = httpx.get(f"{served.url}{path}", headers=BROWSER, timeout=5)
    assert response.status_code == 404
    assert response.headers["content-type"].startswith("text/html")
    assert response.headers["cache-control"] == "no-store"
    body = response.text
    assert "The operations console is off" in body
    assert "OPS_CONSOLE_ENABLED=true" in body
    assert "pyloto users add NAME --role operator" in body
    assert "<form" not in body, "no sign-in form: the console is not served"
    for secret in (APP_SECRET, INTERNAL_TOKEN, VERIFY_TOKEN, str(served.port), "sqlite"):
        assert secret not in body


def test_a_client_gets_json_and_other_methods_the_same_404(served: ServeProcess) -> None:
    """An API client (no HTML in Accept) gets the same advice as JSON; a POST too; a path
    that only starts like /ops stays the plain 404."""
    api = httpx.get(f"{served.url}/ops/api/summary", timeout=5)
    assert api.status_code == 404
    assert api.headers["content-type"].startswith("application/json")
    detail = api.json()["detail"]
    assert detail.startswith("the operations console is off")
    assert "OPS_CONSOLE_ENABLED=true" in detail
    posted = httpx.post(f"{served.url}/ops/login", data={"name": "a", "password": "b"}, timeout=5)
    assert posted.status_code == 404
    assert "OPS_CONSOLE_ENABLED=true" in posted.json()["detail"]
    other = httpx.get(f"{served.url}/opsx", headers=BROWSER, timeout=5)
    assert other.status_code == 404
    assert "OPS_CONSOLE_ENABLED" not in other.text


def test_with_the_console_on_ops_is_the_console(cli_env: dict[str, str], tmp_path: Path) -> None:
    """OPS_CONSOLE_ENABLED=true: /ops is the sign-in form (401), not the page above."""
    server = ServeProcess(
        process_env(cli_env, OPS_CONSOLE_ENABLED="true"), tmp_path / "server-on.log"
    )
    try:
        server.start("/health")
        response = httpx.get(f"{server.url}/ops", headers=BROWSER, timeout=5)
        assert response.status_code == 401
        assert "console is off" not in response.text
    finally:
        server.cleanup()
