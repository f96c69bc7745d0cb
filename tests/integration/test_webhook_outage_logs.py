"""Webhooks refused with 503 while the store is down are counted in full but logged within
the rate limit of every refusal, so a flood of posts during an outage cannot fill the logs or
bury a real error. The Redis is a real redis-server of the test's own, really stopped."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import pytest
from litestar.testing import AsyncTestClient

from pyloto_corp.bootstrap import bootstrap
from pyloto_corp.config import Settings
from pyloto_corp.http.app import create_app
from pyloto_corp.http.rejections import LINES_PER_WINDOW
from tests.support.helpers import encode, envelope, signed_headers, text_message
from tests.support.redis_server import RedisServer
from tests.support.telemetry_capture import Captured

pytestmark = pytest.mark.anyio

POSTS = 4 * LINES_PER_WINDOW


async def test_an_outage_s_503s_are_counted_and_logged_a_few_times(
    tmp_path: Path,
    make_settings: Callable[..., Settings],
    captured: Captured,
    caplog: pytest.LogCaptureFixture,
) -> None:
    server = RedisServer(tmp_path / "redis")  # its port: nothing listens there
    settings = make_settings(
        STATE_BACKEND="redis", REDIS_URL=server.url, REDIS_TIMEOUT_SECONDS="0.5"
    )
    container = bootstrap(settings, telemetry=captured.runtime)
    async with AsyncTestClient(app=create_app(container)) as client:
        caplog.clear()
        caplog.set_level(logging.INFO)
        for n in range(POSTS):
            body = encode(envelope([text_message(f"Oi {n}")]))
            answer = await client.post("/webhook", content=body, headers=signed_headers(body))
            assert answer.status_code == 503
            assert answer.headers["retry-after"]

    lines = [r for r in caplog.records if getattr(r, "event", None) == "webhook_rejected"]
    assert 1 <= len(lines) <= LINES_PER_WINDOW
    assert all(r.levelno == logging.ERROR for r in lines), "an outage is still an error"
    assert {r.__dict__["status"] for r in lines} == {503}
    per_request = [
        r for r in caplog.records if getattr(r, "event", None) == "dependency_unavailable"
    ]
    assert per_request == [], "no line per refused webhook"
    counted = captured.points("pyloto.webhook.rejected")
    assert sum(counted.values()) == POSTS
    assert {dict(key)["pyloto.reason"] for key in counted} <= {
        "store_unavailable",
        "store_not_durable",
    }
