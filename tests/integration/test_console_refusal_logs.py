"""Refused console sign-ins are counted in full and logged within a rate limit (the webhook
refusals' own), so a guessing flood can neither fill the logs nor bury a real error."""

from __future__ import annotations

import logging
from collections.abc import Callable

import pytest
from litestar.testing import AsyncTestClient

from pyloto_corp.bootstrap import bootstrap
from pyloto_corp.config import Settings
from pyloto_corp.http.app import create_app
from pyloto_corp.http.rejections import LINES_PER_WINDOW
from tests.support.helpers import INTERNAL_TOKEN
from tests.support.telemetry_capture import Captured

pytestmark = pytest.mark.anyio

METRIC = "pyloto.ops.signin.refused"
GUESSES = 200


async def test_a_flood_of_wrong_sign_ins_is_counted_in_full_and_logged_a_few_times(
    make_settings: Callable[..., Settings], captured: Captured, caplog: pytest.LogCaptureFixture
) -> None:
    """Two hundred wrong tokens → two hundred 401s and counts, and only the rate limit's share
    of `ops_signin_refused` lines; the right token still signs in."""
    caplog.set_level(logging.INFO)
    settings = make_settings(OPS_CONSOLE_ENABLED="true")
    container = bootstrap(settings, telemetry=captured.runtime)
    async with AsyncTestClient(app=create_app(container)) as client:
        for guess in range(GUESSES):
            refused = await client.post("/ops/login", data={"token": f"guess-{guess}"})
            assert refused.status_code == 401
        right = await client.post(
            "/ops/login", data={"token": INTERNAL_TOKEN}, follow_redirects=False
        )
    assert right.status_code == 303
    lines = [r for r in caplog.records if getattr(r, "event", None) == "ops_signin_refused"]
    assert len(lines) == LINES_PER_WINDOW
    assert all(r.levelno == logging.WARNING for r in lines)
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == LINES_PER_WINDOW
    assert captured.points(METRIC) == {(("pyloto.reason", "wrong_token"),): GUESSES}
    for record in caplog.records:
        assert "guess-" not in record.getMessage() + repr(record.__dict__)
