"""The console's Queues page over HTTP on the real app (local queue, SQLite or Redis): a
send that Meta refused for now shows as a retry on the outbound queue with its next attempt,
the instances show on Redis, and neither the page nor its JSON carries personal data."""

from __future__ import annotations

import re
from html import unescape
from typing import Any

import anyio
import pytest

from pyloto_corp.domain.privacy import message_ref
from pyloto_corp.observability.pii_scan import scan_lines
from tests.e2e.conftest import OpenPyloto
from tests.e2e.support import Pyloto
from tests.support.accounts import ensure_account, post_sign_in
from tests.support.fake_graph import PHONE_NUMBER_ID, FakeGraph, Fault
from tests.support.fake_graph import TOKEN as GRAPH_TOKEN
from tests.support.helpers import (
    CONTACT_NAME,
    PHONE,
    SENDER,
    envelope,
    realistic_wamid,
    text_message,
)

pytestmark = pytest.mark.anyio

# A retry waits this long: it stays on the page for the whole test.
BACKOFF = "300"


async def _sign_in(app: Pyloto) -> None:
    await ensure_account(app.container.settings)
    assert (await post_sign_in(app.client)).status_code == 303


def _no_personal_data(body: str) -> None:
    text = unescape(re.sub(r"<[^>]+>", " ", body))
    for shown in (body, text):
        assert scan_lines(shown.splitlines()) == []
        for secret in (SENDER, PHONE, CONTACT_NAME, "Quero"):
            assert secret not in shown


async def _queues_until(app: Pyloto, holds: Any) -> dict[str, Any]:
    """GET /ops/api/queues until `holds(data)` (a deadlock guard, not a timing)."""
    with anyio.fail_after(20):
        while True:
            response = await app.client.get("/ops/api/queues")
            assert response.status_code == 200
            data: dict[str, Any] = response.json()
            if holds(data):
                return data
            await anyio.sleep(0.02)


async def test_without_a_session_the_queues_are_not_shown(open_pyloto: OpenPyloto) -> None:
    async with open_pyloto(OPS_CONSOLE_ENABLED="true") as app:
        page = await app.client.get("/ops/queues")
        assert page.status_code == 401
        assert 'id="signin"' in page.text
        assert 'id="queue-inbound"' not in page.text
        api = await app.client.get("/ops/api/queues")
        assert api.status_code == 401
        assert "queues" not in api.json()
    async with open_pyloto() as app:  # the console off
        assert (await app.client.get("/ops/queues")).status_code == 404


async def test_a_send_refused_for_now_is_a_retry_on_the_outbound_queue(
    open_pyloto: OpenPyloto, backend: dict[str, str], graph: FakeGraph
) -> None:
    """Meta answers 130429 (throughput) once: the send's task waits for its second attempt,
    and the page and its JSON show it by its log reference with its next attempt."""
    outbound = {
        "WHATSAPP_ACCESS_TOKEN": GRAPH_TOKEN,
        "WHATSAPP_PHONE_NUMBER_ID": PHONE_NUMBER_ID,
        "WHATSAPP_API_BASE_URL": graph.base_url,
        "LOCAL_QUEUE_MIN_BACKOFF_SECONDS": BACKOFF,
        "LOCAL_QUEUE_MAX_BACKOFF_SECONDS": BACKOFF,
    }
    async with open_pyloto(**backend, **outbound) as app:
        await _sign_in(app)
        graph.inject(Fault(code=130429))
        wamid = realistic_wamid(SENDER)
        before = app.container.clock()
        await app.post(envelope([text_message("Quero saber o preço", wamid)]))

        def outbound_retrying(data: dict[str, Any]) -> bool:
            queues = {q["queue"]: q for q in data["queues"]}
            return bool(queues["outbound"]["retrying"])

        data = await _queues_until(app, outbound_retrying)
        queues = {q["queue"]: q for q in data["queues"]}
        assert set(queues) == {"inbound", "outbound"}
        out = queues["outbound"]
        assert out["backend"] == "local"
        assert (out["retrying"], out["depth"], out["in_flight"]) == (1, 1, 0)
        (retry,) = out["retries"]
        assert retry["ref"] == message_ref(wamid)
        assert retry["attempt"] == 2
        assert retry["next_at"] >= before + float(BACKOFF)
        assert retry["backoff_seconds"] >= float(BACKOFF)
        assert out["oldest_waiting_seconds"] is None  # the retry is not due yet
        assert queues["inbound"]["retrying"] == 0
        page = await app.client.get("/ops/queues")
        assert page.status_code == 200
        assert page.headers["cache-control"] == "no-store"
        assert 'id="nav-queues" href="/ops/queues" aria-current="page"' in page.text
        assert message_ref(wamid) in page.text
        assert 'id="retrying-outbound">1<' in page.text
        assert "not available" not in page.text  # the local queue knows every figure
        if "REDIS_URL" in backend:
            (me,) = [i for i in data["instances"] if i["this"]]
            assert me["status"] == "live"
            assert data["adopted_total"] == 0
            assert 'id="instance-list"' in page.text
            assert "(this one)" in page.text
        else:
            assert data["instances"] is None
            assert 'id="single-instance"' in page.text
        for body in (page.text, (await app.client.get("/ops/api/queues")).text):
            assert wamid not in body
            _no_personal_data(body)


async def test_the_console_links_the_queues_page(open_pyloto: OpenPyloto) -> None:
    async with open_pyloto(OPS_CONSOLE_ENABLED="true") as app:
        await _sign_in(app)
        machine = await app.client.get("/ops")
        assert 'id="nav-queues" href="/ops/queues"' in machine.text
        idle = (await app.client.get("/ops/api/queues")).json()
        assert [(q["queue"], q["depth"], q["retrying"]) for q in idle["queues"]] == [
            ("inbound", 0, 0),
            ("outbound", 0, 0),
        ]
