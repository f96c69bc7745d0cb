"""Refused console sign-ins are counted in full and logged within a rate limit (the webhook
refusals' own), so a guessing flood can neither fill the logs nor bury a real error; past
the limits the sign-in itself is refused (429) before any password is checked."""

from __future__ import annotations

import logging
from collections.abc import Callable

import pytest
from litestar.testing import AsyncTestClient

from pyloto_corp.application.accounts import account_ref
from pyloto_corp.bootstrap import bootstrap
from pyloto_corp.config import Settings
from pyloto_corp.http.app import create_app
from pyloto_corp.http.rejections import LINES_PER_WINDOW
from tests.support.accounts import ACCOUNT, PASSWORD, ensure_account, post_sign_in
from tests.support.telemetry_capture import Captured

pytestmark = pytest.mark.anyio

METRIC = "pyloto.ops.signin.refused"
GUESSES = 200
PER_ACCOUNT = 5  # OPS_SIGNIN_FAILURES_PER_ACCOUNT's default


async def test_a_flood_of_wrong_sign_ins_is_counted_in_full_and_logged_a_few_times(
    make_settings: Callable[..., Settings], captured: Captured, caplog: pytest.LogCaptureFixture
) -> None:
    """Two hundred wrong passwords for one account → five 401s, then 429s without checking
    the password, each counted; only the rate limit's share of `ops_signin_refused` lines
    (per reason), none with a password or the account's name; the right password waits for
    the window, while another account signs in."""
    caplog.set_level(logging.INFO)
    settings = make_settings(OPS_CONSOLE_ENABLED="true")
    await ensure_account(settings)
    await ensure_account(settings, "other.ops")
    container = bootstrap(settings, telemetry=captured.runtime)
    async with AsyncTestClient(app=create_app(container)) as client:
        statuses = [
            (await post_sign_in(client, password=f"guess-{guess}-x")).status_code
            for guess in range(GUESSES)
        ]
        locked = await post_sign_in(client)
        other = await post_sign_in(client, "other.ops")
    assert statuses == [401] * PER_ACCOUNT + [429] * (GUESSES - PER_ACCOUNT)
    assert locked.status_code == 429
    assert locked.headers["retry-after"] == "60"
    assert other.status_code == 303
    lines = [r for r in caplog.records if getattr(r, "event", None) == "ops_signin_refused"]
    assert len(lines) == 2 * LINES_PER_WINDOW  # wrong_password, rate_limited_account
    assert all(r.levelno == logging.WARNING for r in lines)
    assert {getattr(r, "detail", "") for r in lines} == {f"account {account_ref(ACCOUNT)}"}
    assert captured.points(METRIC) == {
        (("pyloto.reason", "wrong_password"),): PER_ACCOUNT,
        (("pyloto.reason", "rate_limited_account"),): GUESSES - PER_ACCOUNT + 1,
    }
    for record in caplog.records:
        text = record.getMessage() + repr(record.__dict__)
        assert "guess-" not in text
        assert PASSWORD not in text
        assert ACCOUNT not in text


async def test_one_client_trying_many_accounts_is_limited_by_its_address(
    make_settings: Callable[..., Settings], captured: Captured
) -> None:
    """Failures across many names from one address stop at the client limit (429), and
    unknown names are refused exactly as wrong passwords are (401, the same page)."""
    settings = make_settings(OPS_CONSOLE_ENABLED="true", OPS_SIGNIN_FAILURES_PER_CLIENT="3")
    await ensure_account(settings)
    container = bootstrap(settings, telemetry=captured.runtime)
    async with AsyncTestClient(app=create_app(container)) as client:
        unknown = await post_sign_in(client, "nobody.here")
        wrong = await post_sign_in(client, password="wrong password")
        third = await post_sign_in(client, "someone.else")
        blocked = await post_sign_in(client)
    assert [unknown.status_code, wrong.status_code, third.status_code] == [401, 401, 401]
    assert unknown.text == wrong.text
    assert blocked.status_code == 429
    assert captured.points(METRIC)[(("pyloto.reason", "rate_limited_client"),)] == 1
