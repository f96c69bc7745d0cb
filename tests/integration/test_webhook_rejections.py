"""Refused webhooks leave a trace on the server: a WARNING per reason (rate-limited, never the
body) and the `pyloto.webhook.rejected` counter, so a secret rotated on one side is seen."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager

import pytest
from litestar.testing import AsyncTestClient

from pyloto_corp.bootstrap import bootstrap
from pyloto_corp.config import Settings
from pyloto_corp.http.app import create_app
from pyloto_corp.http.rejections import LINES_PER_WINDOW, Rejections
from tests.support.helpers import (
    VERIFY_TOKEN,
    encode,
    envelope,
    signature,
    signed_headers,
    text_message,
)
from tests.support.telemetry_capture import Captured

pytestmark = pytest.mark.anyio

METRIC = "pyloto.webhook.rejected"
SECRET_TEXT = "Meu CPF é 123.456.789-09, senha do cofre 7788"


OpenClient = Callable[..., AbstractAsyncContextManager[AsyncTestClient]]  # type: ignore[type-arg]


@pytest.fixture
def open_client(make_settings: Callable[..., Settings], captured: Captured) -> OpenClient:
    """The app on embedded defaults with the captured telemetry."""

    @asynccontextmanager
    async def open_with(**variables: str) -> AsyncIterator[AsyncTestClient]:  # type: ignore[type-arg]
        container = bootstrap(make_settings(**variables), telemetry=captured.runtime)
        async with AsyncTestClient(app=create_app(container)) as client:
            yield client

    return open_with


def rejection_lines(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    """The `webhook_rejected` records, oldest first."""
    return [r for r in caplog.records if getattr(r, "event", None) == "webhook_rejected"]


async def test_each_kind_of_refusal_is_logged_once_with_its_reason_and_counted(
    open_client: OpenClient, captured: Captured, caplog: pytest.LogCaptureFixture
) -> None:
    """Missing and wrong signatures, a body that is not JSON, one over the size limit and a
    failed GET verification each give one WARNING naming the reason and the status, none of
    them quoting the body, and one count under their reason."""
    caplog.set_level(logging.INFO)
    body = encode(envelope([text_message(SECRET_TEXT)]))
    not_json = b"{" + SECRET_TEXT.encode()
    too_large = encode(envelope([text_message(SECRET_TEXT + "x" * 3000)]))
    async with open_client(WEBHOOK_MAX_BODY_BYTES="2048") as client:
        missing = await client.post("/webhook", content=body)
        wrong = await client.post("/webhook", content=body, headers=signed_headers(body, "old"))
        invalid = await client.post("/webhook", content=not_json, headers=signed_headers(not_json))
        large = await client.post("/webhook", content=too_large, headers=signed_headers(too_large))
        verify = await client.get(
            "/webhook",
            params={"hub.mode": "subscribe", "hub.verify_token": "wrong", "hub.challenge": "42"},
        )
        accepted = await client.post("/webhook", content=body, headers=signed_headers(body))
    statuses = [r.status_code for r in (missing, wrong, invalid, large, verify, accepted)]
    assert statuses == [401, 403, 400, 413, 403, 200]

    lines = rejection_lines(caplog)
    assert [(r.reason, r.status) for r in lines] == [  # type: ignore[attr-defined]
        ("missing_signature", 401),
        ("bad_signature", 403),
        ("invalid_body", 400),
        ("too_large", 413),
        ("verification_failed", 403),
    ]
    assert all(r.levelno == logging.WARNING for r in lines)
    for record in caplog.records:
        text = record.getMessage() + repr(record.__dict__)
        assert "123.456.789-09" not in text
        assert "cofre" not in text
    assert captured.points(METRIC) == {
        (("pyloto.reason", reason),): 1
        for reason in (
            "missing_signature",
            "bad_signature",
            "invalid_body",
            "too_large",
            "verification_failed",
        )
    }


async def test_a_flood_of_bad_signatures_is_counted_in_full_and_logged_a_few_times(
    open_client: OpenClient, captured: Captured, caplog: pytest.LogCaptureFixture
) -> None:
    """Forty webhooks signed with a rotated secret → forty 403s, forty counts, and only the
    rate limit's share of log lines; a good webhook and the verification still work."""
    caplog.set_level(logging.INFO)
    body = encode(envelope([text_message("Oi")]))
    headers = {"X-Hub-Signature-256": signature(body, "rotated-secret")}
    async with open_client() as client:
        for _ in range(40):
            assert (await client.post("/webhook", content=body, headers=headers)).status_code == 403
        good = await client.post("/webhook", content=body, headers=signed_headers(body))
        challenge = await client.get(
            "/webhook",
            params={
                "hub.mode": "subscribe",
                "hub.verify_token": VERIFY_TOKEN,
                "hub.challenge": "7",
            },
        )
    assert good.status_code == 200
    assert challenge.text == "7"
    assert len(rejection_lines(caplog)) == LINES_PER_WINDOW
    assert captured.points(METRIC) == {(("pyloto.reason", "bad_signature"),): 40}


def test_after_the_window_the_next_line_says_how_many_were_not_logged(
    captured: Captured, caplog: pytest.LogCaptureFixture
) -> None:
    """Within a window a reason logs `lines_per_window` lines; the first line of a later
    window carries `suppressed`, the number left out, and each reason has its own window."""
    caplog.set_level(logging.INFO)
    now = [1000.0]
    meter = captured.runtime.telemetry.metrics
    rejections = Rejections(
        meter.webhook_rejections, clock=lambda: now[0], lines_per_window=2, window_seconds=60
    )
    for _ in range(5):
        rejections.note("bad_signature", 403)
    rejections.note("missing_signature", 401)
    now[0] += 59
    rejections.note("bad_signature", 403)
    assert [r.reason for r in rejection_lines(caplog)] == [  # type: ignore[attr-defined]
        "bad_signature",
        "bad_signature",
        "missing_signature",
    ]
    now[0] += 1
    rejections.note("bad_signature", 403)
    last = rejection_lines(caplog)[-1]
    assert last.reason == "bad_signature"  # type: ignore[attr-defined]
    assert last.suppressed == 4  # type: ignore[attr-defined]
    rejections.note("bad_signature", 403)
    assert not hasattr(rejection_lines(caplog)[-1], "suppressed")
