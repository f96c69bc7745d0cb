"""Console accounts on the real app, on each store: sessions that end (sign-out, lifetime),
one per sign-in, cookies the store does not know refused, the Origin check, the task routes
closed to people, the other /internal routes open to them with their CSRF token, and no
password or account name in a log line."""

from __future__ import annotations

import io
import re

import anyio
import httpx
import pytest

from pyloto_corp.application.accounts import OPERATOR
from pyloto_corp.cli import message_url
from tests.e2e.conftest import OpenPyloto
from tests.e2e.support import Pyloto
from tests.support.accounts import ACCOUNT, PASSWORD, ensure_account, post_sign_in
from tests.support.helpers import INTERNAL_TOKEN, envelope, text_message

pytestmark = pytest.mark.anyio

COOKIE = "pyloto_ops"


def _only(app: Pyloto, cookie: str | None = None) -> httpx.AsyncClient:
    """The app's client as another browser: no cookie, or only `cookie` (the test client
    runs the app on its own event loop, which the Redis store's connections belong to)."""
    app.client.cookies.clear()
    if cookie is not None:
        app.client.cookies.set(COOKIE, cookie)
    return app.client


async def _signed_in(app: Pyloto, role: str | None = None) -> tuple[str, str]:
    """Sign the app's client in; (the session cookie, its CSRF token)."""
    if role is None:
        await ensure_account(app.container.settings)
    else:
        await ensure_account(app.container.settings, role=role)
    response = await post_sign_in(app.client)
    assert response.status_code == 303, response.text
    cookie = response.cookies[COOKIE]
    found = re.search(r'name="csrf" value="([^"]+)"', (await app.client.get("/ops")).text)
    assert found
    return cookie, found.group(1)


async def test_after_sign_out_the_old_cookie_and_its_csrf_token_are_refused(
    open_pyloto: OpenPyloto, backend: dict[str, str]
) -> None:
    async with open_pyloto(**backend) as app:
        cookie, csrf = await _signed_in(app)
        out = await app.client.post("/ops/logout", data={"csrf": csrf}, follow_redirects=False)
        assert out.status_code == 303
        kept = _only(app, cookie)  # a copy of the cookie, kept by someone
        assert (await kept.get("/ops")).status_code == 401
        assert (await kept.get("/ops/api/summary")).status_code == 401
        replay = await kept.post("/ops/replay", data={"csrf": csrf, "all": "1"})
        assert replay.status_code == 401
        internal = await kept.post(
            "/internal/replay", json={"failed": True}, headers={"X-CSRF-Token": csrf}
        )
        assert internal.status_code == 401


async def test_two_sign_ins_in_the_same_second_get_different_sessions(
    open_pyloto: OpenPyloto, backend: dict[str, str]
) -> None:
    async with open_pyloto(**backend) as app:
        await ensure_account(app.container.settings)
        one = (await post_sign_in(_only(app))).cookies[COOKIE]
        two = (await post_sign_in(_only(app))).cookies[COOKIE]
        assert one != two
        first = _only(app, one)
        csrf = re.search(r'name="csrf" value="([^"]+)"', (await first.get("/ops")).text)
        assert csrf
        # Signing one out leaves the other signed in.
        await first.post("/ops/logout", data={"csrf": csrf.group(1)})
        assert (await _only(app, one).get("/ops")).status_code == 401
        assert (await _only(app, two).get("/ops")).status_code == 200


async def test_a_cookie_the_store_does_not_know_is_refused(
    open_pyloto: OpenPyloto, backend: dict[str, str]
) -> None:
    """A forged id, the old signed format for an expiry in 2036, an empty one, a huge one."""
    async with open_pyloto(**backend) as app:
        await _signed_in(app)
        for cookie in ("forged-session-id", f"2082758400.{'a' * 40}", "", "x" * 5000):
            assert (await _only(app, cookie).get("/ops")).status_code == 401, cookie[:40]


async def test_a_session_ends_after_its_lifetime(open_pyloto: OpenPyloto) -> None:
    """OPS_SESSION_HOURS=0.002: about seven seconds, after which the same cookie is refused.

    Seven seconds, not one: on a loaded machine signing in and the first page can take
    longer than a one-second session lives, and the first assertion must see it alive.
    """
    async with open_pyloto(OPS_CONSOLE_ENABLED="true", OPS_SESSION_HOURS="0.002") as app:
        await _signed_in(app)
        assert (await app.client.get("/ops")).status_code == 200
        with anyio.fail_after(30):
            while True:
                status = (await app.client.get("/ops")).status_code
                if status != 200:
                    break
                await anyio.sleep(0.1)
        assert status == 401


async def test_the_origin_check_refuses_null_other_hosts_and_other_schemes(
    open_pyloto: OpenPyloto,
) -> None:
    async with open_pyloto(OPS_CONSOLE_ENABLED="true") as app:
        _, csrf = await _signed_in(app)
        form = {"csrf": csrf, "id": "wamid.NONE"}
        for origin in (
            "null",
            "https://testserver.local",  # another scheme
            "http://evil.example",
            "http://testserver.local.evil.example",
            "file://",
        ):
            refused = await app.client.post("/ops/search", data=form, headers={"origin": origin})
            assert refused.status_code == 403, origin
            internal = await app.client.post(
                "/internal/replay",
                json={"failed": True},
                headers={"origin": origin, "X-CSRF-Token": csrf},
            )
            assert internal.status_code == 403, origin
        login = await post_sign_in(app.client, origin="null")
        assert login.status_code == 403
        own = await app.client.post(
            "/ops/search", data=form, headers={"origin": "http://testserver.local"}
        )
        assert own.status_code == 404  # accepted: no record with this id
        proxied = await app.client.post(
            "/ops/search",
            data=form,
            headers={"origin": "https://testserver.local", "x-forwarded-proto": "https"},
        )
        assert proxied.status_code == 404


async def test_a_task_route_refuses_a_console_session(
    open_pyloto: OpenPyloto, backend: dict[str, str]
) -> None:
    """A person signed in (with the CSRF token, from this origin) cannot run a task: the
    attempt Cloud Tasks would count as the last one dead-letters nothing."""
    async with open_pyloto(**backend) as app:
        message = text_message("Olá")
        await app.post(envelope([message]))
        view = await app.wait_for(str(message["id"]))
        assert view["state"] == "sent"
        _, csrf = await _signed_in(app)
        headers = {
            "X-CSRF-Token": csrf,
            "X-CloudTasks-TaskRetryCount": "7",
            "origin": "http://testserver.local",
        }
        advance = await app.client.post(
            "/internal/tasks/advance",
            json={"message_id": message["id"], "state": "received"},
            headers=headers,
        )
        assert advance.status_code == 401
        sweep = await app.client.post("/internal/sweep", headers=headers)
        assert sweep.status_code == 401
        assert (await app.view(str(message["id"])))["state"] == "sent"
        with_token = await app.client.post(
            "/internal/sweep", headers={"X-Internal-Token": INTERNAL_TOKEN}
        )
        assert with_token.status_code == 200  # the machine's credential still works


async def test_other_internal_routes_take_a_session_and_its_csrf_token_for_posts(
    open_pyloto: OpenPyloto, backend: dict[str, str]
) -> None:
    async with open_pyloto(**backend) as app:
        message = text_message("Olá")
        await app.post(envelope([message]))
        await app.wait_for(str(message["id"]))
        nobody = _only(app)
        url = message_url("", str(message["id"]))
        assert (await nobody.get(url)).status_code == 401
        assert (await nobody.post("/internal/replay", json={"failed": True})).status_code == 401
        _, csrf = await _signed_in(app, OPERATOR)
        read = await app.client.get(message_url("", str(message["id"])))
        assert read.status_code == 200
        assert read.json()["state"] == "sent"
        bare = await app.client.post("/internal/replay", json={"failed": True})
        assert bare.status_code == 403
        wrong = await app.client.post(
            "/internal/replay", json={"failed": True}, headers={"X-CSRF-Token": "0" * 40}
        )
        assert wrong.status_code == 403
        done = await app.client.post(
            "/internal/replay", json={"failed": True}, headers={"X-CSRF-Token": csrf}
        )
        assert done.status_code == 200
        assert done.json()["replayed"] == []


async def test_no_password_or_account_name_reaches_a_log_line(
    open_pyloto: OpenPyloto, log_lines: io.StringIO
) -> None:
    async with open_pyloto(OPS_CONSOLE_ENABLED="true") as app:
        await ensure_account(app.container.settings)
        assert (await post_sign_in(app.client, password="my-wrong-secret")).status_code == 401
        assert (await post_sign_in(app.client, "someone.unknown")).status_code == 401
        _, csrf = await _signed_in(app)
        await app.client.post("/ops/logout", data={"csrf": csrf})
    logged = log_lines.getvalue()
    assert '"ops_signin_refused"' in logged
    assert '"audit"' in logged
    for secret in (PASSWORD, "my-wrong-secret", ACCOUNT, "someone.unknown"):
        assert secret not in logged
