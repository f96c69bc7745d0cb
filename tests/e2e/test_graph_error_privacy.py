"""A Graph error whose text quotes the customer (their BSUID, a wamid, their number) leaves
none of it in the record, a log line or the console: the error's code and words stay."""

from __future__ import annotations

import io
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
from litestar.testing import AsyncTestClient

from pyloto_corp.bootstrap import bootstrap
from pyloto_corp.http.app import create_app
from pyloto_corp.observability.pii_scan import scan_lines
from tests.e2e.support import Pyloto, message_ids
from tests.support.accounts import ensure_account, post_sign_in
from tests.support.fake_graph import PHONE_NUMBER_ID, TOKEN, FakeGraph, Fault
from tests.support.helpers import (
    BSUID,
    SENDER,
    customer_webhook,
    realistic_wamid,
)

pytestmark = pytest.mark.anyio

QUOTED_WAMID = realistic_wamid("5521998765432")


@asynccontextmanager
async def graph_app(make_settings: Any, graph: FakeGraph) -> AsyncIterator[Pyloto]:
    """The app sending through the fake Graph API, with the console on."""
    settings = make_settings(
        WHATSAPP_ACCESS_TOKEN=TOKEN,
        WHATSAPP_PHONE_NUMBER_ID=PHONE_NUMBER_ID,
        WHATSAPP_API_BASE_URL=graph.base_url,
        WHATSAPP_TIMEOUT_SECONDS="2",
        WHATSAPP_PACING_SECONDS="0",  # retries of one send are not paced
        OPS_CONSOLE_ENABLED="true",
    )
    async with AsyncTestClient(app=create_app(bootstrap(settings))) as client:
        yield Pyloto(client)


@pytest.mark.parametrize(
    ("code", "faults", "reason_starts"),
    [
        pytest.param(131026, 1, "permanent: graph error 131026: ", id="permanent"),
        # A rate limit: the send is known not to have been taken, so it is retried until
        # out of attempts (a 131000 would be an unknown outcome, waited on instead).
        pytest.param(130429, 30, "out of attempts (", id="out-of-attempts"),
    ],
)
async def test_a_graph_error_quoting_the_customer_is_stored_and_shown_redacted(
    make_settings: Any,
    graph: FakeGraph,
    log_lines: io.StringIO,
    code: int,
    faults: int,
    reason_starts: str,
) -> None:
    title = f"message {QUOTED_WAMID} to {BSUID} ({SENDER}) undeliverable"
    graph.inject(*[Fault(code=code, title=title) for _ in range(faults)])
    async with graph_app(make_settings, graph) as app:
        payload = customer_webhook("Qual o horário?")
        assert (await app.post(payload)).status_code == 200
        (message_id,) = message_ids(payload)
        view = await app.wait_for(message_id, {"failed"})
        await app.wait_idle()
        stored = await app.container.store.get(message_id)
        await ensure_account(app.container.settings)
        signed = await post_sign_in(app.client)
        assert signed.status_code == 303
        page = (await app.client.get("/ops/dead-letters")).text

    assert view["state"] == "failed"
    assert stored is not None
    reason = stored.failure_reason or ""
    assert reason.startswith(reason_starts), reason
    assert f"graph error {code}" in reason
    assert "undeliverable" in reason  # the error's words are kept
    shown = re.search(r'<td class="reason">([^<]*)</td>', page)
    assert shown
    assert f"graph error {code}" in shown.group(1)
    lines = log_lines.getvalue().splitlines()
    assert any('"record_dead_lettered"' in line for line in lines)
    for where, text in (("failure_reason", reason), ("page", page), ("log", "\n".join(lines))):
        for secret in (BSUID, "1502576394655843", QUOTED_WAMID, "5521998765432", SENDER):
            assert secret not in text, f"{secret!r} in the {where}"
    assert scan_lines([reason, *lines, *page.splitlines()]) == []
