"""The operations console over HTTP, on the real app (SQLite, local queue, dry-run outbox):
access (off by default, sign-in, cookie, CSRF, origin), the pages' data, search by any
wamid, and replay from the page; no page carries personal data."""

from __future__ import annotations

import re
from dataclasses import replace
from html import unescape
from typing import Any

import httpx
import pytest

from pyloto_corp.adapters.redis import RedisKeys, RedisStore, connect
from pyloto_corp.adapters.sqlite import SQLiteStore
from pyloto_corp.application.ports import StateStore
from pyloto_corp.domain.outcome import since_text
from pyloto_corp.domain.privacy import message_ref, redact_text
from pyloto_corp.domain.records import HistoryEntry, InboundMessage, Record
from pyloto_corp.domain.replies import text_reply_body
from pyloto_corp.domain.results import Results
from pyloto_corp.http import ops
from pyloto_corp.observability.pii_scan import scan_lines
from tests.e2e.conftest import OpenPyloto
from tests.e2e.support import Pyloto
from tests.support.accounts import PASSWORD, ensure_account, post_sign_in
from tests.support.fake_graph import PHONE_NUMBER_ID, FakeGraph
from tests.support.fake_graph import TOKEN as GRAPH_TOKEN
from tests.support.helpers import (
    CONTACT_NAME,
    CPF,
    EMAIL,
    INTERNAL_TOKEN,
    PHONE,
    SENDER,
    envelope,
    text_message,
)

pytestmark = pytest.mark.anyio


def _store_beside(app: Pyloto, backend: dict[str, str]) -> StateStore:
    """A second store on the app's data (its SQLite file, or its Redis and prefix)."""
    chart = app.container.chart
    terminal = [name for name, spec in chart.states.items() if spec.terminal]
    if backend.get("STATE_BACKEND") == "redis":
        return RedisStore(
            connect(backend["REDIS_URL"]),
            terminal,
            8 * 86400,
            RedisKeys(backend["REDIS_KEY_PREFIX"]),
            states=list(chart.states),
        )
    return SQLiteStore(app.database, terminal)


async def write_dead_letter(
    app: Pyloto, backend: dict[str, str], message_id: str, **changes: Any
) -> None:
    """A record dead-lettered while sending its reply (nothing sent), written beside the app
    by a second store; `changes` replace its fields."""
    now = app.container.clock()
    inbound = InboundMessage(
        message_id, SENDER, "text", int(now), text="Olá", contact_name=CONTACT_NAME
    )
    failed = replace(
        Record.received(inbound, now),
        state="failed",
        version=4,
        reply=text_reply_body(inbound, "Olá! Já respondemos."),
        failure_reason="graph 131026: message undeliverable",
        history=[HistoryEntry("sending", "failed", "dead_letter", now, 3.0, 3)],
        conversation="c1",
    )
    store = _store_beside(app, backend)
    try:
        assert await store.create_if_absent([replace(failed, **changes)]) == [True]
    finally:
        await store.close()


def _csrf(html: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', html)
    assert found, "no CSRF field on the page"
    return found.group(1)


async def _sign_in(app: Pyloto) -> str:
    """Sign in with an account made as `pyloto users add` makes it; the session's CSRF token."""
    await ensure_account(app.container.settings)
    response = await post_sign_in(app.client)
    assert response.status_code == 303
    assert response.headers["location"] == "/ops"
    page = await app.client.get("/ops")
    assert page.status_code == 200
    return _csrf(page.text)


def _no_personal_data(html: str) -> None:
    text = unescape(re.sub(r"<[^>]+>", " ", html))
    for body in (html, text):
        assert scan_lines(body.splitlines()) == []
        for secret in (SENDER, CONTACT_NAME, "Aparecida", EMAIL, CPF, "91234-5678"):
            assert secret not in body


async def test_the_console_is_off_unless_enabled(open_pyloto: OpenPyloto) -> None:
    async with open_pyloto() as app:
        for path in ("/ops", "/ops/login", "/ops/api/summary", "/ops/static/ops.css"):
            assert (await app.client.get(path)).status_code == 404


async def test_without_a_session_every_page_is_the_sign_in_form_and_no_data(
    open_pyloto: OpenPyloto,
) -> None:
    async with open_pyloto(OPS_CONSOLE_ENABLED="true") as app:
        await app.post(envelope([text_message("Olá")]))
        await app.wait_idle()
        for path in (
            "/ops",
            "/ops/records",
            "/ops/dead-letters",
            "/ops/costs",
            "/ops/messages/abc",
        ):
            response = await app.client.get(path)
            assert response.status_code == 401
            assert 'id="signin"' in response.text
            assert 'id="machine"' not in response.text
            assert "count-" not in response.text
        api = await app.client.get("/ops/api/summary")
        assert api.status_code == 401
        assert "counts" not in api.json()
        refused = await app.client.post("/ops/replay", data={"all": "1", "confirm": "yes"})
        assert refused.status_code == 401
        app.client.cookies.set("pyloto_ops", "9999999999.abc")
        forged = await app.client.get("/ops")
        assert forged.status_code == 401
        with_token = await app.client.get("/ops", headers={"X-Internal-Token": INTERNAL_TOKEN})
        assert with_token.status_code == 401  # the console is for people


async def test_sign_in_sets_a_strict_http_only_cookie_of_a_random_session(
    open_pyloto: OpenPyloto,
) -> None:
    async with open_pyloto(OPS_CONSOLE_ENABLED="true") as app:
        await ensure_account(app.container.settings)
        wrong = await post_sign_in(app.client, password="not-the-password")
        assert wrong.status_code == 401
        assert 'class="error"' in wrong.text
        assert "set-cookie" not in wrong.headers
        token = await app.client.post("/ops/login", data={"token": INTERNAL_TOKEN})
        assert token.status_code == 401  # the machine's token opens no console session
        assert "set-cookie" not in token.headers
        right = await post_sign_in(app.client)
        cookie = right.headers["set-cookie"]
        assert "HttpOnly" in cookie
        assert "samesite=strict" in cookie.lower()
        assert "Path=/;" in cookie
        assert INTERNAL_TOKEN not in cookie
        assert PASSWORD not in cookie
        assert "Secure" not in cookie  # plain HTTP here; behind HTTPS it is Secure
        assert (await app.client.get("/ops")).status_code == 200
        behind_tls = await post_sign_in(
            httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app.client.app), base_url="http://x"
            ),
            **{"x-forwarded-proto": "https"},
        )
        assert "Secure" in behind_tls.headers["set-cookie"]


async def test_posts_need_the_csrf_token_and_this_origin(open_pyloto: OpenPyloto) -> None:
    async with open_pyloto(OPS_CONSOLE_ENABLED="true") as app:
        csrf = await _sign_in(app)
        missing = await app.client.post("/ops/replay", data={"all": "1", "confirm": "yes"})
        assert missing.status_code == 403
        wrong = await app.client.post("/ops/replay", data={"all": "1", "csrf": "0" * 40})
        assert wrong.status_code == 403
        elsewhere = await app.client.post(
            "/ops/replay",
            data={"all": "1", "csrf": csrf},
            headers={"origin": "https://evil.example"},
        )
        assert elsewhere.status_code == 403
        ok = await app.client.post("/ops/replay", data={"all": "1", "csrf": csrf})
        assert ok.status_code == 200
        assert 'id="confirm-replay"' in ok.text
        out = await app.client.post("/ops/logout", data={"csrf": csrf}, follow_redirects=False)
        assert out.status_code == 303
        assert (await app.client.get("/ops")).status_code == 401


async def test_the_machine_counts_records_and_the_summary_follows(
    open_pyloto: OpenPyloto, backend: dict[str, str]
) -> None:
    async with open_pyloto(**backend) as app:
        await _sign_in(app)
        before = (await app.client.get("/ops/api/summary")).json()
        assert before["counts"]["sent"] == 0
        for text in ("Olá", "Bom dia", "Qual o preço?"):
            await app.post(envelope([text_message(text)]))
        await app.wait_idle()
        summary = (await app.client.get("/ops/api/summary")).json()
        assert summary["counts"]["sent"] == 3
        assert summary["counts"]["received"] == 0
        assert summary["taken"]["sending>sent"] == 3
        assert summary["taken"]["deduped>fallback"] == 3  # the LLM is off here
        assert "llm_disabled" in summary["charts"]
        page = await app.client.get("/ops")
        assert re.search(r'id="count-sent"[^>]*>3<', page.text)
        assert re.search(r'data-transition="sending&gt;sent"[^>]*>3<', page.text)
        # An arrow not taken in the last hour is dimmed and has no number, never a grey 0.
        labels = re.findall(r'<text class="edge-count"[^>]*>([^<]*)<', page.text)
        assert labels
        assert "0" not in labels
        assert re.search(r'<g class="edge idle" data-transition="llm1&gt;llm2"', page.text)
        assert re.search(
            r'<text class="edge-count" data-transition="llm1&gt;llm2"[^>]*><', page.text
        )
        # The arrows into `failed` carry no number each: one line beside its box.
        assert 'data-transition="sending&gt;failed"' in page.text
        assert not re.search(
            r'class="edge-count" data-transition="[a-z_0-9]+&gt;failed"', page.text
        )
        assert 'id="into-failed"' in page.text
        # Throughput: a y-axis with its scale, and received and sent told apart.
        assert page.text.count('class="y-axis"') == 2
        assert re.search(r'<text class="tick"[^>]*>0</text>', page.text)
        assert re.search(r'<g class="y-axis" data-top="5">', page.text)  # 3 a minute at most
        assert "sent (dashed line)" in page.text
        # What each figure counts: events in the window, records now.
        assert "dead-letterings (events, last hour)" in page.text
        assert "dead-letterings (events, last day)" in page.text
        assert "failed now (records)" in page.text
        assert "dead letters <b" not in page.text
        # The latency tables sit in a wrapper that keeps them inside their cards.
        assert page.text.count('<div class="table-wrap"><table class="latency-table">') == 2
        assert 'id="diagram"' in page.text
        assert page.headers["cache-control"] == "no-store"
        assert "frame-ancestors 'none'" in page.headers["content-security-policy"]
        css = await app.client.get("/ops/static/ops.css")
        assert css.status_code == 200
        assert "#machine" in css.text
        assert re.search(r"\.chart \.sent \{[^}]*stroke-dasharray", css.text)
        assert re.search(r"\.diagram #machine \{ min-width", css.text)
        assert re.search(r"\.table-wrap \{[^}]*overflow-x: auto", css.text)
        assert (await app.client.get("/ops/static/ops.js")).status_code == 200
        assert (await app.client.get("/ops/static/../config.py")).status_code == 404


async def test_records_filter_page_and_open_a_message_by_any_wamid(
    open_pyloto: OpenPyloto, backend: dict[str, str]
) -> None:
    async with open_pyloto(**backend) as app:
        csrf = await _sign_in(app)
        odd = "wamid.HBgNNTUxMTk4NzY1NDMyMRUCABIYFjNFQjA+/x/y+z=="
        await app.post(envelope([text_message("Meu CPF é " + CPF, message_id=odd)]))
        for i in range(3):
            await app.post(envelope([text_message(f"Oi {i}")]))
        await app.wait_idle()
        listed = await app.client.get("/ops/records", params={"state": "sent"})
        assert listed.status_code == 200
        assert listed.text.count('class="record"') == 4
        assert message_ref(odd) in listed.text
        assert odd not in listed.text
        none = await app.client.get("/ops/records", params={"state": "failed"})
        assert 'id="no-records"' in none.text
        by_reason = await app.client.get("/ops/records", params={"reason": "llm_disabled"})
        assert by_reason.text.count('class="record"') == 4
        other_reason = await app.client.get("/ops/records", params={"reason": "llm_timeout"})
        assert other_reason.text.count('class="record"') == 0
        future = await app.client.get("/ops/records", params={"since": "2999-01-01T00:00"})
        assert future.text.count('class="record"') == 0
        bad = await app.client.get("/ops/records", params={"since": "yesterday", "state": "x"})
        assert bad.status_code == 200
        assert bad.text.count('class="record"') == 4
        assert 'role="alert"' in bad.text

        found = await app.client.post(
            "/ops/search", data={"id": odd, "csrf": csrf}, follow_redirects=False
        )
        assert found.status_code == 303
        link = found.headers["location"]
        assert odd not in link
        assert "5511" not in link
        page = await app.client.get(link)
        assert page.status_code == 200
        assert 'id="timeline"' in page.text
        steps = re.findall(r'<span class="to">([a-z_0-9]+)</span>', page.text)
        assert steps == ["deduped", "fallback", "queued_outbound", "sending", "sent"]
        assert page.text.count('class="attempt"') == 5
        assert 'id="reply"' in page.text
        _no_personal_data(page.text)
        assert CPF not in page.text
        assert odd not in unescape(page.text)  # the reply quotes it as its reference
        absent = await app.client.post("/ops/search", data={"id": "wamid.NOPE", "csrf": csrf})
        assert absent.status_code == 404
        tampered = await app.client.get(link[:-3] + "AAA")
        assert tampered.status_code == 404


async def test_a_dead_letter_is_replayed_from_the_page(
    open_pyloto: OpenPyloto, backend: dict[str, str]
) -> None:
    async with open_pyloto(**backend) as app:
        csrf = await _sign_in(app)
        now = app.container.clock()
        inbound = InboundMessage(
            "wamid.DEADLETTER1", SENDER, "text", int(now), text="Olá", contact_name=CONTACT_NAME
        )
        record = Record.received(inbound, now)
        failed = replace(
            record,
            state="failed",
            version=1,
            failure_reason=f"graph 131026: could not reach {PHONE}",
            history=[HistoryEntry("received", "failed", "dead_letter", now, 3.0, 5)],
            conversation="c1",
        )
        # Written by a store of the test's own: the app's clients belong to its event loop.
        store = _store_beside(app, backend)
        try:
            assert await store.create_if_absent([failed]) == [True]
        finally:
            await store.close()
        listed = await app.client.get("/ops/dead-letters")
        assert listed.text.count('class="dead-letter"') == 1
        assert "graph 131026" in listed.text
        _no_personal_data(listed.text)
        token = re.search(r'name="message" value="([^"]+)"', listed.text)
        assert token
        confirm = await app.client.post(
            "/ops/replay", data={"csrf": csrf, "message": token.group(1)}
        )
        assert 'id="confirm-replay"' in confirm.text
        assert (await app.view("wamid.DEADLETTER1"))["state"] == "failed"  # not yet replayed
        done = await app.client.post(
            "/ops/replay", data={"csrf": csrf, "message": token.group(1), "confirm": "yes"}
        )
        assert done.status_code == 200
        assert 'id="replay-result"' in done.text
        assert done.text.count('class="replayed"') == 1
        view = await app.wait_for("wamid.DEADLETTER1", {"sent"})
        assert view["history"][-1]["to"] == "sent"
        replayed = [h for h in view["history"] if h["trigger"].startswith("replay_")]
        assert replayed
        assert replayed[0]["attempt"] == 0  # a replay is no delivery attempt of a queue
        timeline = await app.client.get(f"/ops/messages/{token.group(1)}")
        assert '<span class="trigger">replay_reply</span>' in timeline.text
        assert "attempt 0" not in re.sub(r"<[^>]+>", "", timeline.text)
        assert timeline.text.count('class="attempt"') == sum(
            1 for h in view["history"] if h["attempt"] >= 1
        )
        again = await app.client.post(
            "/ops/replay", data={"csrf": csrf, "message": token.group(1), "confirm": "yes"}
        )
        assert again.text.count('class="skipped"') == 1
        assert "state is sent" in again.text
        counts: dict[str, Any] = (await app.client.get("/ops/api/summary")).json()["counts"]
        assert counts["failed"] == 0
        assert counts["sent"] == 1


async def test_a_message_page_shows_llm1_the_fallback_and_the_sent_id_by_its_reference(
    open_pyloto: OpenPyloto, backend: dict[str, str]
) -> None:
    """A message LLM#1 read, that fell back later, was dead-lettered, replayed and sent:
    its page shows LLM#1's event, confidence and summary (masked), the fallback's reason,
    step and the template sent instead, and the wamid Meta gave the reply only as its log
    reference; no `attempt 0` on the dead-lettering and the replay; no customer's words in
    clear (the summary quotes their phone and name)."""
    async with open_pyloto(**backend) as app:
        await _sign_in(app)
        now = app.container.clock()
        words = f"Sou {CONTACT_NAME}, meu telefone é {PHONE}: cadê o pedido 4471?"
        inbound = InboundMessage(
            "wamid.LLMREAD1", SENDER, "text", int(now), text=words, contact_name=CONTACT_NAME
        )
        summary = f"{CONTACT_NAME} ({PHONE}) pergunta pelo pedido 4471"
        outbound = "wamid.HBgNNTUxMTk4NzY1NDMyMRUCABEYEjQ5QjA1Q0Y2RDdFQjk0RjM4AA=="
        history = [
            HistoryEntry("received", "deduped", "accept", now, 1.0, 1),
            HistoryEntry("deduped", "llm1", "detect_event", now, 900.0, 1),
            HistoryEntry("llm1", "fallback", "fall_back", now, 10_000.0, 2),
            HistoryEntry("fallback", "queued_outbound", "queue_reply", now, 1.0, 1),
            HistoryEntry("queued_outbound", "sending", "claim_send", now, 1.0, 1),
            HistoryEntry("sending", "failed", "dead_letter", now, 0.1, 0),
            HistoryEntry("failed", "queued_outbound", "replay_send", now, 0.4, 0),
            HistoryEntry("queued_outbound", "sending", "claim_send", now, 1.0, 1),
            HistoryEntry("sending", "sent", "send", now, 80.0, 1),
        ]
        record = replace(
            Record.received(inbound, now),
            state="sent",
            version=len(history),
            results=Results(
                event="order_status",
                confidence=0.87,
                summary=summary,
                fallback_step="llm2",
                template="order_status",
            ),
            fallback_reason="llm_timeout",
            reply=text_reply_body(inbound, "Seu pedido está a caminho."),
            outbound_message_id=outbound,
            delivery_status="delivered",
            history=history,
            conversation="c1",
        )
        store = _store_beside(app, backend)
        try:
            assert await store.create_if_absent([record]) == [True]
        finally:
            await store.close()
        listed = await app.client.get("/ops/records", params={"state": "sent"})
        link = re.search(r'class="message-link" href="([^"]+)"', listed.text)
        assert link
        page = await app.client.get(link.group(1))
        assert page.status_code == 200
        html = page.text
        text = unescape(re.sub(r"<[^>]+>", "", html))
        assert re.search(r'<span id="llm1-event">order_status</span>', html)
        assert re.search(r'<span id="llm1-confidence">0.87</span>', html)
        masked = re.search(r'<span id="llm1-summary">([^<]*)</span>', html)
        assert masked
        assert unescape(masked.group(1)) == redact_text(summary, inbound.names)
        assert "pedido 4471" in unescape(masked.group(1))  # the summary, masked, not dropped
        assert re.search(r'<span id="fallback-detail-reason">llm_timeout</span>', html)
        assert re.search(r'<span id="fallback-step">llm2</span>', html)
        assert "the template order_status" in text
        assert re.search(rf'<code id="sent-ref">{message_ref(outbound)}</code>', html)
        assert outbound not in unescape(html)
        assert outbound.removeprefix("wamid.") not in unescape(html)
        assert "attempt 0" not in text
        assert html.count('class="attempt"') == 7  # the two with attempt 0 show none
        assert "attempt 2" in text
        _no_personal_data(html)
        assert words not in text


async def test_records_and_dead_letters_page_with_a_sealed_cursor(
    open_pyloto: OpenPyloto, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A page holds PAGE_SIZE records, newest first; its link to the next one carries the
    cursor sealed, and the pages together list every record once."""
    monkeypatch.setattr(ops, "PAGE_SIZE", 2)
    async with open_pyloto(OPS_CONSOLE_ENABLED="true") as app:
        await _sign_in(app)
        for text in ("um", "dois", "três"):
            await app.post(envelope([text_message(text)]))
        await app.wait_idle()
        first = await app.client.get("/ops/records", params={"state": "sent"})
        link = re.search(r'id="next-page" href="([^"]+)"', first.text)
        assert link
        assert "state=sent" in unescape(link.group(1))
        second = await app.client.get(unescape(link.group(1)))
        refs = re.findall(r"<code>([0-9a-f]{16})</code>", first.text + second.text)
        assert len(refs) == 3
        assert len(set(refs)) == 3
        assert 'id="next-page"' not in second.text
        forged = await app.client.get("/ops/records", params={"before": "not-a-cursor"})
        assert forged.status_code == 400  # an unreadable cursor: refused, with its reason
        assert "first page" in forged.text


async def test_an_outcome_unknown_dead_letter_says_so_and_its_replay_warns_first(
    open_pyloto: OpenPyloto, backend: dict[str, str], graph: FakeGraph
) -> None:
    """On the Graph API, a dead letter whose send's outcome is unknown shows `outcome
    unknown since …` on the dead letters and its message page; replay-all leaves it alone;
    its replay's confirmation says the reply may already have arrived, and only that
    confirmation sends it (once). No page carries personal data."""
    outbound = {
        "WHATSAPP_ACCESS_TOKEN": GRAPH_TOKEN,
        "WHATSAPP_PHONE_NUMBER_ID": PHONE_NUMBER_ID,
        "WHATSAPP_API_BASE_URL": graph.base_url,
    }
    async with open_pyloto(**backend, **outbound) as app:
        csrf = await _sign_in(app)
        since = app.container.clock() - 300
        await write_dead_letter(
            app,
            backend,
            "wamid.UNKNOWN1",
            failure_reason="outcome unknown since (no_message_id): not sent again",
            send_started_at=since,
            outcome_unknown_since=since,
            outcome_unknown="no_message_id",
            unknown_sends=1,
        )
        shown = f"outcome unknown since {since_text(since)}"
        listed = await app.client.get("/ops/dead-letters")
        assert shown in listed.text
        _no_personal_data(listed.text)
        token = re.search(r'name="message" value="([^"]+)"', listed.text)
        assert token
        message = await app.client.get(f"/ops/messages/{token.group(1)}")
        assert 'id="outcome-unknown"' in message.text
        assert shown in message.text
        _no_personal_data(message.text)

        every = await app.client.post("/ops/replay", data={"csrf": csrf, "all": "1"})
        assert "outcome is unknown are left alone" in unescape(every.text)
        all_done = await app.client.post(
            "/ops/replay", data={"csrf": csrf, "all": "1", "confirm": "yes"}
        )
        assert all_done.text.count('class="skipped"') == 1
        assert "may already have arrived" in all_done.text
        confirm = await app.client.post(
            "/ops/replay", data={"csrf": csrf, "message": token.group(1)}
        )
        assert "the reply may already have arrived" in confirm.text
        assert 'name="confirm_unknown" value="yes"' in confirm.text
        _no_personal_data(confirm.text)
        unconfirmed = await app.client.post(
            "/ops/replay", data={"csrf": csrf, "message": token.group(1), "confirm": "yes"}
        )
        assert unconfirmed.text.count('class="skipped"') == 1
        assert graph.message_requests() == []
        done = await app.client.post(
            "/ops/replay",
            data={
                "csrf": csrf,
                "message": token.group(1),
                "confirm": "yes",
                "confirm_unknown": "yes",
            },
        )
        assert done.text.count('class="replayed"') == 1
        view = await app.wait_for("wamid.UNKNOWN1", {"sent", "failed"})

    assert view["state"] == "sent"
    assert len(graph.sends_for("wamid.UNKNOWN1")) == 1
