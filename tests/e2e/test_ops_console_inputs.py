"""What a client may send the console and the internal routes that they once answered 500:
each is now a 4xx with a one-line reason, no ERROR line, and no wamid in any log line."""

from __future__ import annotations

import io
import json
import re

import httpx
import pytest

from pyloto_corp.observability.pii_scan import scan_lines
from tests.e2e.conftest import OpenPyloto
from tests.e2e.support import Pyloto
from tests.support.accounts import ensure_account, post_sign_in
from tests.support.helpers import (
    INTERNAL_TOKEN,
    SENDER,
    envelope,
    realistic_wamid,
    text_message,
)

pytestmark = pytest.mark.anyio

CONSOLE = {"OPS_CONSOLE_ENABLED": "true"}


async def _sign_in(app: Pyloto) -> str:
    """Sign in with an account; the CSRF token of the session."""
    await ensure_account(app.container.settings)
    response = await post_sign_in(app.client)
    assert response.status_code == 303
    found = re.search(r'name="csrf" value="([^"]+)"', (await app.client.get("/ops")).text)
    assert found
    return found.group(1)


def _raw(app: Pyloto) -> httpx.AsyncClient:
    """A client on the same running app that sends header bytes as given (Latin-1), as a
    client on the network may; the test client would re-encode them as UTF-8."""
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app.client.app), base_url="http://x")


def _one_line_reason(html: str) -> str:
    """The reason a console page gives for refusing, checked to be one line."""
    found = re.search(r'<p class="error"[^>]*>([^<]+)</p>', html)
    assert found, html[:500]
    reason = found.group(1)
    assert "\n" not in reason
    return reason


def _no_error_and_no_wamid(log_lines: io.StringIO, wamid: str) -> None:
    text = log_lines.getvalue()
    severities = {json.loads(line)["severity"] for line in text.splitlines()}
    assert "ERROR" not in severities, text[-2000:]
    assert "Traceback" not in text
    assert wamid not in text
    assert wamid.removeprefix("wamid.") not in text
    assert SENDER not in text
    assert scan_lines(text.splitlines()) == []


@pytest.mark.parametrize("path", ["/ops/records", "/ops/dead-letters"])
async def test_a_message_links_token_given_as_a_page_cursor_is_a_400(
    open_pyloto: OpenPyloto, log_lines: io.StringIO, path: str
) -> None:
    """A message link's sealed token passed as `before` (the cursor of the next page) opens,
    but is no cursor: 400 with its reason, not a 500 whose traceback quotes the wamid."""
    wamid = realistic_wamid(SENDER)
    async with open_pyloto(**CONSOLE) as app:
        await _sign_in(app)
        await app.post(envelope([text_message("Olá", message_id=wamid)]))
        await app.wait_idle()
        listed = await app.client.get("/ops/records")
        token = re.search(r'href="/ops/messages/([^"]+)"', listed.text)
        assert token
        response = await app.client.get(path, params={"before": token.group(1)})
        assert response.status_code == 400
        assert "link" in _one_line_reason(response.text)
        assert 'id="nav-records"' in response.text  # still the console, signed in
        for garbage in ("not-a-cursor", "A" * 5000, "%00", "é"):
            other = await app.client.get(path, params={"before": garbage})
            assert other.status_code == 400, garbage
        assert (await app.client.get(path, params={"before": ""})).status_code == 200
    _no_error_and_no_wamid(log_lines, wamid)


async def test_a_sign_in_with_too_many_form_fields_is_a_400(
    open_pyloto: OpenPyloto, log_lines: io.StringIO
) -> None:
    """POST /ops/login (no session needed) with more fields than a form of the console has:
    400 with its reason, not a 500; the same for a signed-in form."""
    async with open_pyloto(**CONSOLE) as app:
        many = {f"f{i}": "x" for i in range(21)}
        response = await app.client.post("/ops/login", data={"token": "x", **many})
        assert response.status_code == 400
        assert "fields" in _one_line_reason(response.text)
        csrf = await _sign_in(app)
        replay = await app.client.post("/ops/replay", data={"csrf": csrf, **many})
        assert replay.status_code == 400
    _no_error_and_no_wamid(log_lines, "wamid.none")


async def test_odd_cookies_and_csrf_tokens_are_refused_not_a_500(
    open_pyloto: OpenPyloto, log_lines: io.StringIO
) -> None:
    """A session cookie of digits that are not ASCII or too many to read, and a CSRF token
    with non-ASCII characters: 401 and 403, as for any forged value."""
    async with open_pyloto(**CONSOLE) as app:
        async with _raw(app) as raw:
            for cookie in ("²³.abc", "9" * 5000 + ".abc", "9999999999.é"):
                header = f"pyloto_ops={cookie}".encode("latin-1")
                response = await raw.get("/ops", headers={"cookie": header})
                assert response.status_code == 401, cookie
        await _sign_in(app)
        refused = await app.client.post("/ops/replay", data={"csrf": "é", "all": "1"})
        assert refused.status_code == 403
    _no_error_and_no_wamid(log_lines, "wamid.none")


async def test_a_task_retry_count_of_other_digits_is_read_as_the_first_attempt(
    open_pyloto: OpenPyloto, log_lines: io.StringIO
) -> None:
    """X-CloudTasks-TaskRetryCount with a digit that is not ASCII (`²`, sent as Latin-1) is
    no count: the task runs as a first attempt instead of answering 500."""
    async with open_pyloto() as app:
        async with _raw(app) as raw:
            response = await raw.post(
                "/internal/tasks/advance",
                content=b'{"message_id": "wamid.NONE", "state": "received"}',
                headers={
                    "X-Internal-Token": INTERNAL_TOKEN,
                    "X-CloudTasks-TaskRetryCount": "\u00b2".encode("latin-1"),
                },
            )
        assert response.status_code == 200, response.text
    _no_error_and_no_wamid(log_lines, "wamid.none")
