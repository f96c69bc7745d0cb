"""The agent inbox of the console over HTTP, on the real app: a customer asks for a person
(the handoff keyword, LLM off), the conversation waits in /ops/inbox, its page shows the
customer's words in clear; Take over, reply and Release act through the service (CSRF
checked, refusals a 409 page, never a 500). The inbox pages are the only console pages with
the customer's words: the operator pages still show none, and no log line or span carries
them."""

from __future__ import annotations

import inspect
import io
import re
from collections.abc import Callable
from dataclasses import replace
from html import unescape

import pytest
from litestar.testing import AsyncTestClient

from pyloto_corp.application.accounts import AGENT, OPERATOR
from pyloto_corp.bootstrap import bootstrap
from pyloto_corp.config import Settings
from pyloto_corp.domain.conversation import WINDOW_SECONDS, Conversation
from pyloto_corp.http import ops_inbox
from pyloto_corp.http import ops_pages as pages
from pyloto_corp.http.app import create_app
from pyloto_corp.http.ops_inbox import (
    CUSTOMER_WORDS_PREFIX,
    duration_text,
    inbox_principal,
    window_text,
)
from pyloto_corp.observability.pii_scan import scan_lines
from tests.e2e.conftest import OpenPyloto
from tests.e2e.support import Pyloto
from tests.support.accounts import ACCOUNT, ensure_account, post_sign_in
from tests.support.helpers import (
    CONTACT_NAME,
    CPF,
    INTERNAL_TOKEN,
    PHONE,
    SENDER,
    envelope,
    text_message,
)
from tests.support.telemetry_capture import HASH_KEY, Captured

pytestmark = pytest.mark.anyio

ASKING = f"Oi, sou {CONTACT_NAME}, CPF {CPF}, tel {PHONE}: quero falar com um atendente"
# The customer's words as a page shows them (HTML-escaped apostrophes and all).
SECRETS = (CONTACT_NAME, "Aparecida", CPF, "91234-5678", SENDER)


def _csrf(html: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', html)
    assert found, "no CSRF field on the page"
    return found.group(1)


async def _sign_in(app: Pyloto, name: str = ACCOUNT, role: str = AGENT) -> str:
    """Sign in with an account of `role`; the session's CSRF token."""
    await ensure_account(app.container.settings, name, role)
    response = await post_sign_in(app.client, name)
    assert response.status_code == 303
    return _csrf((await app.client.get("/ops")).text)


async def _waiting(app: Pyloto, text: str = ASKING) -> str:
    """A customer asks for a person; the conversation's id once the acknowledgment is sent."""
    message = text_message(text)
    assert (await app.post(envelope([message], name=CONTACT_NAME))).status_code == 200
    view = await app.wait_for(message["id"], {"sent"})
    return str(view["conversation"])


def _text(html: str) -> str:
    return unescape(re.sub(r"<[^>]+>", " ", html))


def _has_no_personal_data(html: str) -> None:
    for body in (html, _text(html)):
        assert scan_lines(body.splitlines()) == []
        for secret in SECRETS:
            assert secret not in body


async def test_a_waiting_conversation_is_listed_and_opened_with_the_customers_words(
    open_pyloto: OpenPyloto,
) -> None:
    async with open_pyloto(OPS_CONSOLE_ENABLED="true") as app:
        await _sign_in(app)
        key = await _waiting(app)
        listed = await app.client.get("/ops/inbox")
        assert listed.status_code == 200
        assert listed.headers["cache-control"] == "no-store"
        rows = re.findall(r'<tr class="conversation" data-mode="([a-z_]+)">', listed.text)
        assert rows == ["waiting_human"]
        assert f'href="/ops/inbox/{key}"' in listed.text
        assert "window closes in 23 h 59 min" in _text(listed.text)
        assert re.search(r'class="waiting">\d+ s<', listed.text)
        # The conversation chart, drawn with the mode counts: 1 waiting, 0 owned.
        assert 'id="conversation-chart"' in listed.text
        assert re.search(r'id="conversation-chart-count-waiting_human"[^>]*>1<', listed.text)
        assert re.search(r'id="conversation-chart-count-human"[^>]*>0<', listed.text)

        page = await app.client.get(f"/ops/inbox/{key}")
        assert page.status_code == 200
        assert page.headers["cache-control"] == "no-store"
        shown = _text(page.text)
        assert ASKING in shown  # in clear: the one place of the console that shows it
        assert "Certo! Um atendente vai falar com você em breve." in shown  # the bot's ack
        assert re.search(r'id="mode"[^>]*>waiting_human<', page.text)
        assert "window closes in 23 h 59 min" in shown
        assert 'id="window-note"' not in page.text


async def test_take_over_reply_and_release_from_the_page_leave_an_audit_trail(
    open_pyloto: OpenPyloto,
) -> None:
    async with open_pyloto(OPS_CONSOLE_ENABLED="true") as app:
        csrf = await _sign_in(app)
        key = await _waiting(app)
        base = f"/ops/inbox/{key}"
        taken = await app.client.post(
            f"{base}/takeover", data={"csrf": csrf}, follow_redirects=False
        )
        assert taken.status_code == 303
        assert taken.headers["location"] == base
        page = (await app.client.get(base)).text
        assert re.search(r'id="mode"[^>]*>human<', page)
        assert re.search(rf'id="owner">{re.escape(ACCOUNT)}<', page)

        sent = await app.client.post(
            f"{base}/reply",
            data={"csrf": csrf, "text": "Olá! Aqui é a Ana."},
            follow_redirects=False,
        )
        assert sent.status_code == 303
        await app.wait_idle()
        page = (await app.client.get(base)).text
        agent = re.search(r'<li class="agent">(.*?)</li>', page)
        assert agent
        assert "Olá! Aqui é a Ana." in _text(agent.group(1))
        assert 'class="state">sent<' in agent.group(1)

        empty = await app.client.post(f"{base}/reply", data={"csrf": csrf, "text": "  "})
        assert empty.status_code == 400
        assert "Not sent: the reply is empty" in _text(empty.text)

        released = await app.client.post(
            f"{base}/release", data={"csrf": csrf}, follow_redirects=False
        )
        assert released.status_code == 303
        page = (await app.client.get(base)).text
        assert re.search(r'id="mode"[^>]*>bot<', page)
        audit = [_text(x) for x in re.findall(r'<li class="audit-entry">(.*?)</li>', page)]
        actions = [[part.strip() for part in a.split(" · ", 2)[1:]] for a in audit]
        assert actions[-3:] == [
            [ACCOUNT, "waiting_human -> human (operator_takeover)"],
            [ACCOUNT, "replied"],
            [ACCOUNT, "human -> bot (agent_release)"],
        ]
        listed = await app.client.get("/ops/inbox")
        assert 'id="no-conversations"' in listed.text


async def test_a_refused_action_is_a_409_page_and_a_forged_post_a_403(
    open_pyloto: OpenPyloto,
) -> None:
    async with open_pyloto(OPS_CONSOLE_ENABLED="true") as app:
        csrf = await _sign_in(app)
        key = await _waiting(app)
        base = f"/ops/inbox/{key}"
        assert (await app.client.post(f"{base}/release", data={"csrf": csrf})).status_code == 200
        again = await app.client.post(f"{base}/release", data={"csrf": csrf})
        assert again.status_code == 409
        assert "Refused: the conversation is in 'bot': it cannot move to 'bot'" in _text(again.text)
        assert 'id="reply-form"' in again.text  # the page, with its actions
        for action in ("takeover", "release", "reply"):
            forged = await app.client.post(f"{base}/{action}", data={"text": "x"})
            assert forged.status_code == 403
            elsewhere = await app.client.post(
                f"{base}/{action}",
                data={"csrf": csrf, "text": "x"},
                headers={"origin": "https://evil.example"},
            )
            assert elsewhere.status_code == 403
        page = (await app.client.get(base)).text
        assert re.search(r'id="mode"[^>]*>bot<', page)  # nothing forged took effect
        for path in ("/ops/inbox/" + "0" * 32, "/ops/inbox/not-an-id"):
            assert (await app.client.get(path)).status_code == 404
        missing = await app.client.post(f"/ops/inbox/{'0' * 32}/takeover", data={"csrf": csrf})
        assert missing.status_code == 404


async def test_without_a_session_the_inbox_is_the_sign_in_form(open_pyloto: OpenPyloto) -> None:
    async with open_pyloto(OPS_CONSOLE_ENABLED="true") as app:
        key = await _waiting(app)
        for path in ("/ops/inbox", f"/ops/inbox/{key}"):
            response = await app.client.get(path)
            assert response.status_code == 401
            assert 'id="signin"' in response.text
            _has_no_personal_data(response.text)
        refused = await app.client.post(f"/ops/inbox/{key}/takeover", data={})
        assert refused.status_code == 401
    async with open_pyloto() as app:  # the console off: no inbox either
        assert (await app.client.get("/ops/inbox")).status_code == 404


async def test_the_operator_pages_show_none_of_the_customers_words(
    open_pyloto: OpenPyloto,
) -> None:
    """Every console GET route but the inbox's, visited with a conversation waiting: none
    shows the words or the name the inbox shows."""
    async with open_pyloto(OPS_CONSOLE_ENABLED="true") as app:
        await _sign_in(app)
        key = await _waiting(app)
        inbox = await app.client.get(f"/ops/inbox/{key}")
        assert CONTACT_NAME in _text(inbox.text)  # the capture works: the inbox shows them
        records = (await app.client.get("/ops/records")).text
        message = re.search(r'href="(/ops/messages/[^"]+)"', records)
        assert message
        visited = [
            "/ops",
            "/ops/records",
            "/ops/dead-letters",
            "/ops/api/summary",
            "/ops/costs",
            message[1],
            # A replay's followed records, and the customer's own records list.
            "/ops/replay/status?m=" + message[1].removeprefix("/ops/messages/"),
            f"/ops/records?customer={key}",
            "/ops/queues",
            "/ops/api/queues",
        ]
        routes = {
            route.path
            for route in app.client.app.routes
            if route.path.startswith("/ops") and "GET" in route.methods
        }
        # Every GET page of the console is visited here or is the inbox (the exception).
        pages = {r for r in routes if not r.startswith(CUSTOMER_WORDS_PREFIX)}
        assert pages == {
            "/ops",
            "/ops/records",
            "/ops/dead-letters",
            "/ops/api/summary",
            "/ops/costs",
            "/ops/messages/{token:str}",
            "/ops/replay/status",
            "/ops/login",
            "/ops/static/{name:str}",
            "/ops/queues",
            "/ops/api/queues",
        }
        for path in visited:
            response = await app.client.get(path)
            assert response.status_code == 200, path
            _has_no_personal_data(response.text)  # the message page: its text masked


async def test_rendering_the_inbox_puts_nothing_of_it_in_a_log_line_or_a_span(
    make_settings: Callable[..., Settings], log_lines: io.StringIO
) -> None:
    captured = Captured(HASH_KEY)
    settings = make_settings(OPS_CONSOLE_ENABLED="true")
    container = bootstrap(settings, telemetry=captured.runtime)
    try:
        async with AsyncTestClient(app=create_app(container)) as client:
            app = Pyloto(client)
            csrf = await _sign_in(app)
            key = await _waiting(app)
            before = len(log_lines.getvalue().splitlines())
            spans_before = len(captured.spans())
            base = f"/ops/inbox/{key}"
            for _ in range(2):
                assert CONTACT_NAME in _text((await client.get(base)).text)
                assert (await client.get("/ops/inbox")).status_code == 200
            await client.post(f"{base}/takeover", data={"csrf": csrf})
            reply = f"Oi {CONTACT_NAME}, confirmo o CPF {CPF}"
            await client.post(f"{base}/reply", data={"csrf": csrf, "text": reply})
            await app.wait_idle()
            assert CPF in _text((await client.get(base)).text)
        lines = log_lines.getvalue().splitlines()[before:]
        spans = [span.to_json(indent=None) for span in captured.spans()[spans_before:]]
    finally:
        captured.runtime.shutdown()
    assert lines, "the capture works: the rendering and the actions log something"
    assert any('"ops_inbox_action"' in line for line in lines)
    assert spans, "the capture works: the requests made spans"
    for out in (*lines, *spans):
        for secret in (*SECRETS, "quero falar", "confirmo"):
            assert secret not in out, f"{secret!r} in {out[:300]}"


def test_the_inbox_access_check_is_one_function_that_names_the_actor() -> None:
    """`inbox_principal` is the agent role's check: every inbox handler calls it (the source
    says so)."""
    source = inspect.getsource(ops_inbox)
    handlers = re.findall(r"async def (inbox|conversation|_act)\(", source)
    assert sorted(handlers) == ["_act", "conversation", "inbox"]
    for name in ("inbox", "conversation"):
        body = inspect.getsource(getattr(ops_inbox.InboxController, name).fn)
        assert "inbox_principal(request)" in body
    assert "inbox_principal(request)" in inspect.getsource(ops_inbox._act)
    assert 'principal.may("agent")' in inspect.getsource(inbox_principal)


async def test_an_operator_account_cannot_open_the_inbox_or_the_conversations(
    open_pyloto: OpenPyloto,
) -> None:
    """An operator sees the console's masked pages, never a customer's words: the inbox
    pages, its actions and /internal/conversations refuse them (403); an agent may."""
    async with open_pyloto(OPS_CONSOLE_ENABLED="true") as agent_app:
        key = await _waiting(agent_app)
    async with open_pyloto(OPS_CONSOLE_ENABLED="true") as app:
        csrf = await _sign_in(app, "olga.ops", OPERATOR)
        assert (await app.client.get("/ops")).status_code == 200  # the operator's pages
        for path in ("/ops/inbox", f"/ops/inbox/{key}"):
            refused = await app.client.get(path)
            assert refused.status_code == 403, path
            _has_no_personal_data(refused.text)
        posted = await app.client.post(
            f"/ops/inbox/{key}/takeover", data={"csrf": csrf}, follow_redirects=False
        )
        assert posted.status_code == 403
        api = await app.client.get(f"/internal/conversations/{key}")
        assert api.status_code == 403
        listed = await app.client.get("/internal/conversations")
        assert listed.status_code == 403
        # The machine token (a helpdesk) still may.
        token = {"X-Internal-Token": INTERNAL_TOKEN}
        assert (
            await app.client.get(f"/internal/conversations/{key}", headers=token)
        ).status_code == 200


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0, "0 s"),
        (59, "59 s"),
        (60, "1 min"),
        (12 * 60 + 5, "12 min"),
        (3600, "1 h"),
        (3 * 3600 + 20 * 60, "3 h 20 min"),
        (WINDOW_SECONDS, "24 h"),
        (50 * 3600, "2 d 2 h"),
        (-5, "0 s"),
    ],
)
def test_durations_read_as_an_agent_says_them(seconds: float, text: str) -> None:
    assert duration_text(seconds) == text


def test_a_closed_window_says_how_a_reply_goes() -> None:
    now = 1_800_000_000.0
    open_ = Conversation("a" * 32, mode="human", customer_at=now - 3600 - 40 * 60)
    closed = replace(open_, customer_at=now - WINDOW_SECONDS - 1)
    assert window_text(open_, now) == "window closes in 22 h 20 min"
    assert window_text(closed, now) == "window closed"
    assert window_text(Conversation("b" * 32), now).startswith("no window")
    page = pages.conversation_page(
        conversation=closed,
        entries=[],
        window=window_text(closed, now),
        window_open=False,
        in_mode="5 min",
        csrf="c",
    )
    note = re.search(r'id="window-note">(.*?)</p>', page)
    assert note
    assert "re-engagement template" in unescape(note.group(1))
    assert "held" in note.group(1)
