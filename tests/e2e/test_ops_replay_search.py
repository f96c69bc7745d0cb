"""The console's replay feedback and its search of a customer, on the real app (each store,
the Graph API a local server of the test's own): a replay's result says what became of each
record it re-drove (sent, failed again and why, still running), with its link; a dead
letter's own page replays it after the confirmation; an operator finds a customer's records
by their number, in any mask, or their BSUID, and the number reaches no URL, log line or
span."""

from __future__ import annotations

import io
import re
from collections.abc import Callable
from html import unescape

import httpx
import pytest
from litestar.testing import AsyncTestClient

from pyloto_corp.application.llm_steps import conversation_id
from pyloto_corp.bootstrap import bootstrap
from pyloto_corp.config import Settings
from pyloto_corp.domain.privacy import message_ref
from pyloto_corp.http.app import create_app
from tests.e2e.conftest import OpenPyloto
from tests.e2e.support import Pyloto
from tests.e2e.test_ops_console import _no_personal_data, _sign_in, write_dead_letter
from tests.support.fake_graph import PHONE_NUMBER_ID, FakeGraph, Fault
from tests.support.fake_graph import TOKEN as GRAPH_TOKEN
from tests.support.helpers import BSUID, SENDER, customer_webhook
from tests.support.telemetry_capture import HASH_KEY, Captured

pytestmark = pytest.mark.anyio

# SENDER (5511987654321) as operators may type it.
SENDER_TYPED = (
    "+55 (11) 98765-4321",
    "55 11 98765 4321",
    "5511987654321",
    "0055 11 987654321",
    "(11) 98765-4321",
    "+55 11 8765-4321",  # without the ninth digit
)
# Each way the number and its digits could leak.
SENDER_FORMS = (SENDER, "98765-4321", "987654321", "87654321", "8765-4321")


def _graph(graph: FakeGraph) -> dict[str, str]:
    return {
        "WHATSAPP_ACCESS_TOKEN": GRAPH_TOKEN,
        "WHATSAPP_PHONE_NUMBER_ID": PHONE_NUMBER_ID,
        "WHATSAPP_API_BASE_URL": graph.base_url,
    }


def _token(html: str) -> str:
    found = re.search(r'name="message" value="([^"]+)"', html)
    assert found, "no replay form on the page"
    return found.group(1)


async def _dead_letter_token(app: Pyloto, backend: dict[str, str], message_id: str) -> str:
    """Write a dead letter beside the app; the sealed id its row's Replay form posts."""
    await write_dead_letter(app, backend, message_id)
    return _token((await app.client.get("/ops/dead-letters")).text)


def _replayed_row(html: str, outcome: str) -> str:
    """The replay result's row of the record that ended `outcome` (sent, failed)."""
    found = re.search(rf'<li class="replayed" data-outcome="{outcome}">(.*?)</li>', html)
    assert found, html
    return found.group(1)


async def _settled(app: Pyloto, page: httpx.Response) -> str:
    """The replay's result once no record on it is still running: the page itself, else the
    page its "see again" link (and meta refresh) leads to, followed until it says so."""
    html = page.text
    for _ in range(200):
        again = re.search(r'id="see-again" href="([^"]+)"', html)
        if again is None:
            return html
        assert 'http-equiv="refresh"' in html  # without a script, the page looks again
        await app.wait_idle()
        html = (await app.client.get(unescape(again.group(1)))).text
    raise AssertionError(f"still running: {html}")


async def _opens(app: Pyloto, item: str, message_id: str) -> None:
    """The row's link opens the record's timeline."""
    link = re.search(r'href="(/ops/messages/[^"]+)"', item)
    assert link, item
    page = await app.client.get(link.group(1))
    assert page.status_code == 200
    assert f'<code id="ref">{message_ref(message_id)}</code>' in page.text
    assert 'id="timeline"' in page.text


async def _replay(app: Pyloto, csrf: str, token: str) -> str:
    confirm = await app.client.post("/ops/replay", data={"csrf": csrf, "message": token})
    assert 'id="confirm-replay"' in confirm.text
    done = await app.client.post(
        "/ops/replay", data={"csrf": csrf, "message": token, "confirm": "yes"}
    )
    assert done.status_code == 200
    return await _settled(app, done)


async def test_a_replay_that_fails_again_says_so_with_the_reason_and_the_link(
    open_pyloto: OpenPyloto, backend: dict[str, str], graph: FakeGraph
) -> None:
    async with open_pyloto(**backend, **_graph(graph)) as app:
        csrf = await _sign_in(app)
        token = await _dead_letter_token(app, backend, "wamid.AGAIN1")
        graph.inject(Fault(code=131026))
        html = await _replay(app, csrf, token)
        assert (await app.view("wamid.AGAIN1"))["state"] == "failed"
        item = _replayed_row(html, "failed")
        await _opens(app, item, "wamid.AGAIN1")
    assert "failed again" in item
    assert "131026" in item
    assert message_ref("wamid.AGAIN1") in item
    assert "0</b> sent" in html
    assert 'id="see-again"' not in html
    _no_personal_data(html)


async def test_a_replay_that_succeeds_says_sent(
    open_pyloto: OpenPyloto, backend: dict[str, str], graph: FakeGraph
) -> None:
    async with open_pyloto(**backend, **_graph(graph)) as app:
        csrf = await _sign_in(app)
        token = await _dead_letter_token(app, backend, "wamid.SENT1")
        html = await _replay(app, csrf, token)
        item = _replayed_row(html, "sent")
        await _opens(app, item, "wamid.SENT1")
    assert '<b class="outcome">sent</b>' in item
    assert len(graph.sends_for("wamid.SENT1")) == 1
    _no_personal_data(html)


async def test_the_status_page_of_a_replay_refuses_an_edited_link(
    open_pyloto: OpenPyloto,
) -> None:
    async with open_pyloto(OPS_CONSOLE_ENABLED="true") as app:
        await _sign_in(app)
        for query in ("", "?m=forged", "?m="):
            response = await app.client.get(f"/ops/replay/status{query}")
            assert response.status_code == 400
            assert "not valid" in response.text


async def test_a_failed_messages_page_replays_it_after_the_confirmation(
    open_pyloto: OpenPyloto, backend: dict[str, str], graph: FakeGraph
) -> None:
    async with open_pyloto(**backend, **_graph(graph)) as app:
        csrf = await _sign_in(app)
        token = await _dead_letter_token(app, backend, "wamid.BUTTON1")
        page = await app.client.get(f"/ops/messages/{token}")
        form = re.search(r'<form id="replay-message" [^>]*>(.*?)</form>', page.text)
        assert form, page.text
        assert 'action="/ops/replay"' in page.text
        assert f'name="csrf" value="{csrf}"' in form.group(1)
        assert 'name="message"' in form.group(1)
        assert 'name="confirm"' not in form.group(1)  # the confirmation comes first
        html = await _replay(app, csrf, _token(form.group(1)))
        assert 'data-outcome="sent"' in html
        sent = await app.client.get(f"/ops/messages/{token}")
        assert 'id="replay-message"' not in sent.text  # a sent record has no Replay button
    assert len(graph.sends_for("wamid.BUTTON1")) == 1


async def _customer_records(app: Pyloto, csrf: str, typed: str) -> tuple[str, str]:
    """POST the customer search; (the redirect's Location, the page it leads to)."""
    found = await app.client.post(
        "/ops/search", data={"csrf": csrf, "customer": typed}, follow_redirects=False
    )
    assert found.status_code == 303, (typed, found.text)
    location = found.headers["location"]
    return location, (await app.client.get(location)).text


async def test_a_customer_is_found_by_number_in_any_mask_and_by_bsuid(
    open_pyloto: OpenPyloto, backend: dict[str, str]
) -> None:
    async with open_pyloto(**backend, BURST_QUIET_SECONDS="0") as app:
        csrf = await _sign_in(app)
        both = customer_webhook("Olá", message_id="wamid.BOTH1")
        other = customer_webhook(
            "Oi", phone="5521987651234", user_id=None, message_id="wamid.OTHER1"
        )
        for payload in (both, other):
            assert (await app.post(payload)).status_code == 200
        await app.wait_idle()
        customer = conversation_id(BSUID, app.container.settings.hash_key)
        for typed in (*SENDER_TYPED, BSUID, f"  {BSUID.lower()}  "):
            location, html = await _customer_records(app, csrf, typed)
            assert location == f"/ops/records?customer={customer}", typed
            assert message_ref("wamid.BOTH1") in html, typed
            assert message_ref("wamid.OTHER1") not in html, typed
            assert 'id="customer-key"' in html
            _no_personal_data(html)
            for form in SENDER_FORMS:
                assert form not in location
        # A customer known by number alone: their number's hash is their key.
        alone = conversation_id("5521987651234", app.container.settings.hash_key)
        for typed in ("+55 21 98765-1234", "552187651234", "(21) 98765-1234"):
            location, html = await _customer_records(app, csrf, typed)
            assert location == f"/ops/records?customer={alone}", typed
            assert message_ref("wamid.OTHER1") in html
            assert message_ref("wamid.BOTH1") not in html

        unknown = await app.client.post(
            "/ops/search", data={"csrf": csrf, "customer": "+55 11 90000-0000"}
        )
        assert unknown.status_code == 404
        assert "No records for this phone number or BSUID." in unknown.text
        assert "90000-0000" not in unknown.text
        bad = await app.client.post("/ops/search", data={"csrf": csrf, "customer": "maria"})
        assert bad.status_code == 400
        assert "type a phone number" in bad.text
        edited = await app.client.get("/ops/records", params={"customer": "5511987654321"})
        assert edited.status_code == 400
        empty = await app.client.get("/ops/records", params={"customer": "0" * 32})
        assert 'id="no-records"' in empty.text


async def test_the_customer_search_puts_the_number_in_no_log_line_or_span(
    make_settings: Callable[..., Settings], log_lines: io.StringIO
) -> None:
    captured = Captured(HASH_KEY)
    container = bootstrap(
        make_settings(OPS_CONSOLE_ENABLED="true", BURST_QUIET_SECONDS="0"),
        telemetry=captured.runtime,
    )
    try:
        async with AsyncTestClient(app=create_app(container)) as client:
            app = Pyloto(client)
            csrf = await _sign_in(app)
            assert (await app.post(customer_webhook("Olá"))).status_code == 200
            await app.wait_idle()
            locations = []
            for typed in (*SENDER_TYPED, BSUID, "+55 11 90000-0000"):
                answer = await client.post(
                    "/ops/search",
                    data={"csrf": csrf, "customer": typed},
                    follow_redirects=False,
                )
                assert answer.status_code in (303, 404)
                locations.append(answer.headers.get("location", ""))
                for form in (*SENDER_FORMS, "90000-0000", "900000000"):
                    assert form not in answer.text
            # From the start: the customer's message, then the searches for them.
            lines = log_lines.getvalue().splitlines()
            spans = [span.to_json(indent=None) for span in captured.spans()]
    finally:
        captured.runtime.shutdown()
    assert spans, "the capture works: the message made spans"
    assert any('"transition"' in line for line in lines), "the capture works"
    assert sum(1 for location in locations if location.startswith("/ops/records?customer=")) == 7
    for out in (*lines, *spans, *locations):
        for secret in (*SENDER_FORMS, *SENDER_TYPED, BSUID, "90000-0000", "1502576394655843"):
            assert secret not in out, f"{secret!r} in {out[:300]}"
