"""Replies through the Graph API adapter end to end: a signed webhook runs to `sent` (or
`failed`) against tests/support/fake_graph.py, a local server speaking the messages endpoint.

The fake validates every request against WhatsApp's schema and limits; the fixture fails the
test on any violation, on two accepted sends for one record, or on two read receipts for one
message, and prints the sends it saw per scenario (for the closing note of the issue).
"""

from __future__ import annotations

import asyncio
import io
import logging
import threading
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

import anyio
import pytest
from litestar.testing import AsyncTestClient

from pyloto_corp.application.ports import TransientStepError
from pyloto_corp.bootstrap import bootstrap
from pyloto_corp.config import Settings
from pyloto_corp.devtools.fake_openai import CHOICE, DRAFT, FakeOpenAI, json_answer
from pyloto_corp.http.app import create_app
from pyloto_corp.observability.pii_scan import scan_lines
from tests.e2e.support import FALLBACK_PATH, LLM_PATH, Pyloto, message_ids, trajectory
from tests.support.fake_graph import PHONE_NUMBER_ID, TOKEN, FakeGraph, Fault
from tests.support.helpers import (
    BSUID,
    INTERNAL_TOKEN,
    SENDER,
    USERNAME,
    customer_webhook,
    envelope,
    eventually,
    status,
    text_message,
    user_id_changed,
)
from tests.support.llm_outputs import SATURDAY_SECTIONS, choice

pytestmark = pytest.mark.anyio

SITE = "https://barbearia-navalha.example.com.br"

OpenApp = Callable[..., AbstractAsyncContextManager[Pyloto]]


@pytest.fixture
def graph(graph: FakeGraph, request: pytest.FixtureRequest) -> Iterator[FakeGraph]:
    """The shared fake Graph API with more checks at teardown: no invalid request, no record
    sent twice, no message marked read twice. Prints the accepted sends of the scenario."""
    server = graph  # the app is closed by now: nothing more reaches the server
    yield server
    lines = [send.describe() for send in server.sends] or ["(none)"]
    print(f"\n[{request.node.name}] sends the fake Graph API accepted:")
    for line in lines:
        print(f"  {line}")
    assert server.violations == []
    twice = [cb for cb, n in Counter(s.callback for s in server.sends).items() if n > 1]
    assert twice == [], f"sent more than once: {twice}"
    reads = Counter(str(r["message_id"]) for r in server.reads)
    assert [m for m, n in reads.items() if n > 1] == [], "a message was marked read twice"


@pytest.fixture
def open_app(
    make_settings: Callable[..., Settings], graph: FakeGraph, fake_openai: FakeOpenAI
) -> OpenApp:
    """Start the app on the fake Graph API: `async with open_app(VAR="x") as app`;
    `llm=True` runs the LLM steps on the fake OpenAI server."""

    @asynccontextmanager
    async def open_with(llm: bool = False, **overrides: str) -> AsyncIterator[Pyloto]:
        variables = {
            "WHATSAPP_ACCESS_TOKEN": TOKEN,
            "WHATSAPP_PHONE_NUMBER_ID": PHONE_NUMBER_ID,
            "WHATSAPP_API_BASE_URL": graph.base_url,
            "WHATSAPP_TIMEOUT_SECONDS": "2",
            **overrides,
        }
        if llm:
            variables |= {
                "OPENAI_API_KEY": "sk-test",
                "OPENAI_BASE_URL": fake_openai.base_url,
                "OPENAI_MAX_RETRIES": "0",
                "BUSINESS_WEBSITE_URL": SITE,
            }
        app = create_app(bootstrap(make_settings(**variables)))
        async with AsyncTestClient(app=app) as client:
            yield Pyloto(client)

    return open_with


async def post_message(app: Pyloto, text: str = "Qual o horário de vocês?") -> str:
    """Post one signed text message; its id."""
    message = text_message(text)
    response = await app.post(envelope([message]))
    assert response.status_code == 200, response.text
    return str(message["id"])


# --- each reply type ----------------------------------------------------------------------


async def test_a_template_text_reply_is_sent_once_as_a_reply_and_the_message_marked_read(
    open_app: OpenApp, graph: FakeGraph
) -> None:
    """Without the LLM the template text goes to Graph as a reply to the inbound message,
    with the record's id as callback data; the outbound id is recorded; the inbound message
    is marked read once, with a typing indicator."""
    async with open_app() as app:
        message_id = await post_message(app)
        view = await app.wait_for(message_id)

    assert trajectory(view) == FALLBACK_PATH
    (send,) = graph.sends_for(message_id)
    assert send.body["type"] == "text"
    assert send.body["to"] == SENDER
    assert send.body["context"] == {"message_id": message_id}
    assert view["outbound_message_id"] == send.outbound_id
    assert graph.reads == [
        {
            "messaging_product": "whatsapp",
            "status": "read",
            "message_id": message_id,
            "typing_indicator": {"type": "text"},
        }
    ]


async def test_the_typing_indicator_can_be_turned_off(open_app: OpenApp, graph: FakeGraph) -> None:
    """WHATSAPP_TYPING_INDICATOR=false marks the message read without the indicator."""
    async with open_app(WHATSAPP_TYPING_INDICATOR="false") as app:
        message_id = await post_message(app)
        await app.wait_for(message_id)
    assert graph.reads == [
        {"messaging_product": "whatsapp", "status": "read", "message_id": message_id}
    ]


LLM_CHOICES = {
    "button": choice(
        "buttons",
        "Quer agendar um horário?",
        buttons=[{"id": "sim", "title": "Agendar"}, {"id": "nao", "title": "Agora não"}],
    ),
    "list": choice(
        "list",
        "Escolha um horário para sábado:",
        list_button_text="Ver horários",
        sections=SATURDAY_SECTIONS,
    ),
    "cta_url": choice(
        "cta_url",
        "Agende pelo nosso site:",
        cta_display_text="Agendar online",
        cta_url=f"{SITE}/agendar",
    ),
}


@pytest.mark.parametrize("kind", sorted(LLM_CHOICES))
async def test_each_interactive_reply_type_is_accepted_by_graph(
    kind: str, open_app: OpenApp, graph: FakeGraph, fake_openai: FakeOpenAI
) -> None:
    """Buttons, list and CTA URL chosen by LLM#3 pass the fake's schema and limit checks and
    are sent once, as interactive messages of that type."""
    fake_openai.queue(CHOICE, json_answer(LLM_CHOICES[kind]))
    async with open_app(llm=True) as app:
        message_id = await post_message(app, "Quero agendar um corte")
        view = await app.wait_for(message_id)

    assert trajectory(view) == LLM_PATH
    (send,) = graph.sends_for(message_id)
    assert send.body["type"] == "interactive"
    assert send.body["interactive"]["type"] == kind
    assert view["outbound_message_id"] == send.outbound_id


# --- errors by code -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "fault",
    [
        Fault(code=130429),
        Fault(code=131056),
        Fault(code=80007),
        Fault(code=4),
        Fault(status=429),
    ],
    ids=["130429", "131056", "80007", "4", "http-429"],
)
async def test_a_transient_error_is_retried_then_sent_once(
    fault: Fault, open_app: OpenApp, graph: FakeGraph
) -> None:
    """A rate-limit refusal (400 with a rate-limit code, or a bare 429: nothing was sent)
    releases the claim; the outbound queue retries and the reply is sent exactly once."""
    graph.inject(fault)
    async with open_app() as app:
        message_id = await post_message(app)
        view = await app.wait_for(message_id)

    assert view["state"] == "sent"
    assert len(graph.message_requests()) == 2, "one refused request, one accepted"
    (send,) = graph.sends_for(message_id)
    assert view["outbound_message_id"] == send.outbound_id
    assert view["history"][-1]["attempt"] == 2


@pytest.mark.parametrize("code", [131047, 131026, 131051, 100])
async def test_a_permanent_error_dead_letters_with_the_code(
    code: int, open_app: OpenApp, graph: FakeGraph
) -> None:
    """A permanent Graph error moves the record to `failed` at once with the code in the
    reason; nothing is retried or sent."""
    graph.inject(Fault(code=code))
    async with open_app() as app:
        message_id = await post_message(app)
        view = await app.wait_for(message_id)
        await app.wait_idle()

    assert view["state"] == "failed"
    assert f"graph error {code}" in view["failure_reason"]
    assert len(graph.message_requests()) == 1
    assert graph.sends == []


async def test_an_expired_token_dead_letters_and_logs_an_alertable_error(
    open_app: OpenApp, graph: FakeGraph, caplog: pytest.LogCaptureFixture
) -> None:
    """Error 190 moves the record to `failed` and logs an ERROR line with the event
    `whatsapp_token_expired`, which an alert can match."""
    graph.inject(Fault(code=190))
    caplog.set_level(logging.INFO)
    async with open_app() as app:
        message_id = await post_message(app)
        view = await app.wait_for(message_id)

    assert view["state"] == "failed"
    assert "graph error 190" in view["failure_reason"]
    alerts = [r for r in caplog.records if getattr(r, "event", None) == "whatsapp_token_expired"]
    assert [r.levelno for r in alerts] == [logging.ERROR]
    assert TOKEN not in caplog.text


# --- customers known by a BSUID -------------------------------------------------------------


async def test_a_customer_known_only_by_a_bsuid_is_replied_to_in_recipient(
    open_app: OpenApp, graph: FakeGraph
) -> None:
    """A message without the number (a customer with a username) is answered with
    `recipient` set to the BSUID and no `to` (which Meta would accept and never deliver);
    one that shows the number gets `to` and no `recipient`."""
    async with open_app() as app:
        hidden = customer_webhook("Qual o horário?", phone=None, username="maria.corte")
        shown = customer_webhook("E no sábado?")
        for payload in (hidden, shown):
            assert (await app.post(payload)).status_code == 200
        views = [await app.wait_for(message_ids(p)[0]) for p in (hidden, shown)]

    assert [view["state"] for view in views] == ["sent", "sent"]
    (to_bsuid,) = graph.sends_for(message_ids(hidden)[0])
    (to_phone,) = graph.sends_for(message_ids(shown)[0])
    assert (to_bsuid.body["recipient"], "to" in to_bsuid.body) == (BSUID, False)
    assert (to_phone.body["to"], "recipient" in to_phone.body) == (SENDER, False)
    assert graph.undelivered == []


async def test_131062_dead_letters_with_its_own_reason_and_no_retry(
    open_app: OpenApp, graph: FakeGraph
) -> None:
    """Graph refusing a BSUID recipient (131062) moves the record to `failed` at once with
    the reason `bsuid_recipient_unsupported`; the send is not retried."""
    graph.inject(Fault(code=131062))
    async with open_app() as app:
        payload = customer_webhook("Qual o horário?", phone=None)
        assert (await app.post(payload)).status_code == 200
        view = await app.wait_for(message_ids(payload)[0])
        await app.wait_idle()

    assert view["state"] == "failed"
    assert view["failure_reason"].startswith("permanent: bsuid_recipient_unsupported: ")
    assert "graph error 131062" in view["failure_reason"]
    assert len(graph.message_requests()) == 1
    assert graph.sends == []


NEW_BSUID = "BR.8712093345510278"
PARENT_BSUID = "BR.ENT.99887766554433221"


def draft_turns(fake_openai: FakeOpenAI) -> list[list[str]]:
    """The conversation LLM#2 was shown for each draft: the texts of its user and assistant
    messages, oldest first (the system prompt left out)."""
    return [
        [m["content"] for m in body["messages"] if m["role"] != "system"]
        for body in fake_openai.seen(DRAFT)
    ]


async def test_a_customer_keeps_one_memory_when_the_number_is_hidden_and_the_bsuid_changes(
    open_app: OpenApp, graph: FakeGraph, fake_openai: FakeOpenAI
) -> None:
    """On the LLM path, through the webhook: written first with number and BSUID, then with
    the BSUID alone, then (after `user_id_update`) with a new BSUID alone, LLM#2 is shown
    every earlier exchange each time; the replies go to `to`, then `recipient` twice."""
    async with open_app(llm=True) as app:
        payloads = [customer_webhook("Quanto custa o corte?")]
        payloads.append(customer_webhook("E a barba?", phone=None, username=USERNAME))
        for payload in payloads:
            assert (await app.post(payload)).status_code == 200
            assert (await app.wait_for(message_ids(payload)[0]))["state"] == "sent"
        assert (await app.post(user_id_changed(BSUID, NEW_BSUID, "field"))).status_code == 200
        payloads.append(customer_webhook("Tem horário amanhã?", phone=None, user_id=NEW_BSUID))
        assert (await app.post(payloads[-1])).status_code == 200
        assert (await app.wait_for(message_ids(payloads[-1])[0]))["state"] == "sent"

    first, second, third = draft_turns(fake_openai)
    assert len(first) == 1
    assert first[0].startswith("Quanto custa o corte?")
    assert len(second) == 3, "the first turn and its reply, then the new message"
    assert second[0] == "Quanto custa o corte?"
    assert second[-1].startswith("E a barba?")
    assert len(third) == 5
    assert third[:3] == [*second[:2], "E a barba?"]
    assert third[-1].startswith("Tem horário amanhã?")
    recipients = [graph.sends_for(message_ids(p)[0])[0].body for p in payloads]
    assert [r.get("to") for r in recipients] == [SENDER, None, None]
    assert [r.get("recipient") for r in recipients] == [None, BSUID, NEW_BSUID]


async def test_no_bsuid_or_username_in_clear_in_a_debug_log(
    open_app: OpenApp, graph: FakeGraph, fake_openai: FakeOpenAI, log_lines: io.StringIO
) -> None:
    """A BSUID is personal data like a number: at DEBUG, through the LLM path, a reply in
    `recipient`, a delivery status naming it, a changed BSUID (both shapes), a 131062 refusal
    and a customer quoting it, no log line carries a BSUID, parent id or username, and
    `pii-scan` finds nothing."""
    fake_openai.always(DRAFT, json_answer({"text": f"Anotado, {BSUID}: corte às 15h."}))
    async with open_app(llm=True) as app:
        shown = customer_webhook(f"Meu id é {BSUID}, quero cortar o cabelo")
        shown_value = shown["entry"][0]["changes"][0]["value"]
        shown_value["messages"][0]["from_parent_user_id"] = PARENT_BSUID
        shown_value["contacts"][0]["parent_user_id"] = PARENT_BSUID
        hidden = customer_webhook("E a barba?", phone=None, username=USERNAME)
        for payload in (shown, hidden):
            assert (await app.post(payload)).status_code == 200
            view = await app.wait_for(message_ids(payload)[0])
            assert view["state"] == "sent", view
        delivered = status(view["outbound_message_id"], "delivered", 1732500000)
        del delivered["recipient_id"]
        delivered["recipient_user_id"] = BSUID
        assert (await app.post(envelope(statuses=[delivered]))).status_code == 200
        for change in (
            user_id_changed(BSUID, NEW_BSUID),
            user_id_changed(NEW_BSUID, BSUID, "field"),
        ):
            assert (await app.post(change)).status_code == 200
        # Graph's error quoting the recipient: the failure reason is logged.
        graph.inject(Fault(code=131062, title=f"recipient {NEW_BSUID} not supported"))
        refused = customer_webhook("Oi?", phone=None, user_id=NEW_BSUID, username=USERNAME)
        assert (await app.post(refused)).status_code == 200
        failed = await app.wait_for(message_ids(refused)[0])
        await app.wait_idle()

    assert failed["state"] == "failed"
    (reply,) = graph.sends_for(message_ids(hidden)[0])
    assert (reply.body["recipient"], "to" in reply.body) == (BSUID, False)
    lines = log_lines.getvalue().splitlines()
    text = "\n".join(lines)
    for event in ("webhook_ingested", "llm2_response_generated", "customer_id_changed"):
        assert f'"{event}"' in text, f"{event} was not logged"
    assert '"severity": "DEBUG"' in text or '"severity":"DEBUG"' in text, "DEBUG was captured"
    for secret in (BSUID, NEW_BSUID, PARENT_BSUID, USERNAME, "1502576394655843"):
        assert secret.lower() not in text.lower(), f"{secret!r} is in a log line"
    findings = scan_lines(lines)
    assert findings == [], [str(finding) for finding in findings[:3]]


# --- at most once ------------------------------------------------------------------------


async def test_concurrent_duplicate_send_tasks_send_once(
    open_app: OpenApp, graph: FakeGraph
) -> None:
    """Copies of the send task running while the first is waiting on Graph are turned away,
    and copies arriving after it are no-ops: one request reaches Graph."""
    graph.inject(Fault(delay=0.5))
    async with open_app() as app:
        message_id = await post_message(app)
        await eventually(lambda: len(graph.message_requests()) == 1)
        advance = app.container.advancer.advance
        during = await asyncio.gather(
            *(advance(message_id, "sending") for _ in range(5)), return_exceptions=True
        )
        view = await app.wait_for(message_id)
        await app.wait_idle()  # the first delivery has given its lease back
        after = [await advance(message_id, "sending") for _ in range(3)]

    assert all(isinstance(outcome, TransientStepError) for outcome in during), during
    assert after == ["stale"] * 3
    assert view["state"] == "sent"
    assert len(graph.message_requests()) == 1
    assert len(graph.sends_for(message_id)) == 1


async def test_a_lost_answer_is_reconciled_from_the_status_webhook_not_resent(
    open_app: OpenApp, graph: FakeGraph
) -> None:
    """Graph accepts the send but answers after the client gave up (the crash window: sent,
    not saved). The redelivered task keeps waiting instead of sending; the status webhook
    echoing the record's id lets it record that send as `sent`: no second request."""
    graph.inject(Fault(delay=1.5))
    settings = {
        "WHATSAPP_TIMEOUT_SECONDS": "0.5",
        # Retries spread over seconds, so the status webhook arrives within the attempts.
        "LOCAL_QUEUE_MIN_BACKOFF_SECONDS": "0.3",
        "LOCAL_QUEUE_MAX_BACKOFF_SECONDS": "1.0",
    }
    async with open_app(**settings) as app:
        message_id = await post_message(app)
        await eventually(lambda: len(graph.sends_for(message_id)) == 1)
        (send,) = graph.sends_for(message_id)
        await anyio.to_thread.run_sync(send.answered.wait, 10.0)  # the client gave up by now
        held = await app.view(message_id)
        assert held["state"] == "sending", "the lost answer did not complete the send"

        statuses = [status(send.outbound_id, "sent", 1_732_500_100, callback=message_id)]
        response = await app.post(envelope(statuses=statuses))
        assert response.status_code == 200
        view = await app.wait_for(message_id)

    assert view["state"] == "sent"
    assert view["outbound_message_id"] == send.outbound_id
    assert len(graph.message_requests()) == 1


async def test_statuses_out_of_order_keep_the_furthest(open_app: OpenApp, graph: FakeGraph) -> None:
    """read, then delivered and sent arriving late: the record's delivery status stays read."""
    async with open_app() as app:
        message_id = await post_message(app)
        view = await app.wait_for(message_id)
        (send,) = graph.sends_for(message_id)
        for state, at in (("read", 30), ("delivered", 20), ("sent", 10)):
            item = status(send.outbound_id, state, 1_732_500_000 + at, callback=message_id)
            assert (await app.post(envelope(statuses=[item]))).status_code == 200
        final = await app.view(message_id)

    assert view["state"] == "sent"
    assert final["delivery_status"] == "read"


async def test_a_dead_lettered_reply_is_replayed_and_sent_once(
    open_app: OpenApp, graph: FakeGraph
) -> None:
    """A reply refused with a permanent code lands in `failed`; once the cause is fixed,
    replay sends it through the Graph API exactly once, and a second replay sends nothing."""
    graph.inject(Fault(code=131047))
    async with open_app() as app:
        message_id = await post_message(app)
        assert (await app.wait_for(message_id))["state"] == "failed"
        await app.wait_idle()
        token = {"X-Internal-Token": INTERNAL_TOKEN}
        first = await app.client.post(
            "/internal/replay", json={"message_id": message_id}, headers=token
        )
        assert first.status_code == 200
        assert first.json()["replayed"] == [message_id]
        view = await app.wait_for(message_id)
        await app.wait_idle()
        again = await app.client.post(
            "/internal/replay", json={"message_id": message_id}, headers=token
        )

    assert view["state"] == "sent"
    assert [h["to"] for h in view["history"]][-4:] == [
        "failed",
        "queued_outbound",
        "sending",
        "sent",
    ]
    assert len(graph.message_requests()) == 2, "the refused request and the replayed one"
    (send,) = graph.sends_for(message_id)
    assert view["outbound_message_id"] == send.outbound_id
    assert again.json()["skipped"] == {message_id: "state is sent"}


# --- business numbers -----------------------------------------------------------------------

SECOND_NUMBER = "106540352242933"
SECOND_TOKEN = "EAAG-test-second-number-token"
# A number of the same Meta app this service is not configured to answer for.
UNKNOWN_NUMBER = "999999999999999"


def written_to(payload: dict[str, Any], phone_number_id: str) -> dict[str, Any]:
    """The webhook `payload` as Meta sends it for a message to business number
    `phone_number_id` (its `metadata`)."""
    for entry in payload["entry"]:
        for change in entry["changes"]:
            change["value"]["metadata"]["phone_number_id"] = phone_number_id
    return payload


async def post_to(app: Pyloto, phone_number_id: str) -> str:
    """Post one signed text message written to `phone_number_id`; its id."""
    message = text_message("Vocês abrem no sábado?")
    response = await app.post(written_to(envelope([message]), phone_number_id))
    assert response.status_code == 200, response.text
    return str(message["id"])


@pytest.mark.parametrize(
    ("tokens", "second_token"),
    [({}, TOKEN), ({"WHATSAPP_ACCESS_TOKENS": f"{SECOND_NUMBER}:{SECOND_TOKEN}"}, SECOND_TOKEN)],
    ids=["shared-token", "own-token"],
)
async def test_a_message_to_a_second_number_is_read_and_answered_from_it(
    open_app: OpenApp, graph: FakeGraph, tokens: dict[str, str], second_token: str
) -> None:
    """With two business numbers configured, each message is marked read and answered
    through the number it was written to (with that number's token, when it has its own);
    the first number keeps answering its own messages."""
    graph.add_number(SECOND_NUMBER, second_token)
    async with open_app(WHATSAPP_PHONE_NUMBER_IDS=SECOND_NUMBER, **tokens) as app:
        to_second = await post_to(app, SECOND_NUMBER)
        to_first = await post_to(app, PHONE_NUMBER_ID)
        second_view = await app.wait_for(to_second)
        first_view = await app.wait_for(to_first)

    assert second_view["state"] == first_view["state"] == "sent"
    (second_send,) = graph.sends_for(to_second)
    (first_send,) = graph.sends_for(to_first)
    assert second_send.phone_number_id == SECOND_NUMBER
    assert first_send.phone_number_id == PHONE_NUMBER_ID
    assert graph.read_number(to_second) == [SECOND_NUMBER]
    assert graph.read_number(to_first) == [PHONE_NUMBER_ID]


async def test_a_message_to_a_number_not_configured_is_ignored_without_any_graph_request(
    open_app: OpenApp, graph: FakeGraph
) -> None:
    """A webhook for another number of the app: accepted (200), recorded and ended
    `ignored` with its reason; never marked read, never answered from our number."""
    async with open_app() as app:
        message_id = await post_to(app, UNKNOWN_NUMBER)
        view = await app.wait_for(message_id)
        await app.wait_idle()

    assert view["state"] == "ignored"
    assert view["results"]["ignored_reason"] == "unknown_business_number"
    assert trajectory(view) == ["received", "ignored"]
    assert graph.requests == []


async def test_a_message_naming_no_number_is_answered_from_the_default_one(
    open_app: OpenApp, graph: FakeGraph
) -> None:
    """Older payloads (and `pyloto simulate`'s) may carry no phone_number_id: the
    default number, WHATSAPP_PHONE_NUMBER_ID, reads and answers them."""
    graph.add_number(SECOND_NUMBER)
    async with open_app(WHATSAPP_PHONE_NUMBER_IDS=SECOND_NUMBER) as app:
        message_id = await post_to(app, "")
        await app.wait_for(message_id)
    (send,) = graph.sends_for(message_id)
    assert send.phone_number_id == PHONE_NUMBER_ID
    assert graph.read_number(message_id) == [PHONE_NUMBER_ID]


# --- a send whose outcome is unknown ----------------------------------------------------------

# Retries spread over seconds and a short reconcile window, so a wait for a status webhook
# ends within the outbound queue's attempts.
UNKNOWN_SETTINGS = {
    "WHATSAPP_RECONCILE_SECONDS": "1",
    "LOCAL_QUEUE_MIN_BACKOFF_SECONDS": "0.3",
    "LOCAL_QUEUE_MAX_BACKOFF_SECONDS": "1.0",
}


@pytest.fixture(params=["sqlite", "redis"])
def store_settings(request: pytest.FixtureRequest, redis_prefix: str) -> dict[str, str]:
    """The app's store: the embedded SQLite file, or the tests' private redis-server."""
    if request.param == "sqlite":
        return {}
    server = request.getfixturevalue("redis_server")
    return {"STATE_BACKEND": "redis", "REDIS_URL": server.url, "REDIS_KEY_PREFIX": redis_prefix}


async def replay(app: Pyloto, message_id: str, **extra: Any) -> dict[str, Any]:
    """POST /internal/replay for one record; the summary."""
    response = await app.client.post(
        "/internal/replay",
        json={"message_id": message_id, **extra},
        headers={"X-Internal-Token": INTERNAL_TOKEN},
    )
    assert response.status_code == 200, response.text
    summary: dict[str, Any] = response.json()
    return summary


async def test_a_500_after_graph_took_the_send_is_recorded_from_its_status_not_resent(
    open_app: OpenApp, graph: FakeGraph, store_settings: dict[str, str]
) -> None:
    """Graph takes the send, its `sent` status (echoing the record's key) arrives, then the
    call answers HTTP 500 code 131000: the error proves nothing about the send, so the claim
    is kept and the retry records the send its status names instead of sending again."""
    answer = threading.Event()
    graph.inject(Fault(code=131000, accepted=True, hold=answer))
    async with open_app(WHATSAPP_TIMEOUT_SECONDS="20", **store_settings) as app:
        message_id = await post_message(app)
        await eventually(lambda: len(graph.sends_for(message_id)) == 1)
        (send,) = graph.sends_for(message_id)
        statuses = [status(send.outbound_id, "sent", 1_732_500_100, callback=message_id)]
        assert (await app.post(envelope(statuses=statuses))).status_code == 200
        answer.set()  # now Graph answers the send: 500, code 131000
        view = await app.wait_for(message_id)
        await app.wait_idle()

    assert view["state"] == "sent"
    assert view["outbound_message_id"] == send.outbound_id
    assert len(graph.message_requests()) == 1, "no second request for the reply"


@pytest.mark.parametrize(
    ("fault", "settings", "why"),
    [
        (Fault(no_id=True), {}, "no_message_id"),
        (Fault(delay=2.0), {"WHATSAPP_TIMEOUT_SECONDS": "0.5"}, "no_answer"),
    ],
    ids=["200-without-id", "no-answer-in-time"],
)
async def test_a_send_graph_took_without_a_usable_answer_is_never_sent_again(
    fault: Fault,
    settings: dict[str, str],
    why: str,
    open_app: OpenApp,
    graph: FakeGraph,
    store_settings: dict[str, str],
) -> None:
    """Graph takes the send and answers 200 without a message id, or never answers in time,
    and no status webhook comes: after the reconcile window the record is dead-lettered as
    `outcome unknown` (since the claim) without a second request, and a replay asks for a
    confirmation that says the reply may already have arrived."""
    graph.inject(fault)
    async with open_app(**UNKNOWN_SETTINGS, **settings, **store_settings) as app:
        message_id = await post_message(app)
        view = await app.wait_for(message_id)
        await app.wait_idle()
        summary = await replay(app, message_id)
        after = await app.view(message_id)

    assert view["state"] == "failed"
    assert len(graph.message_requests()) == 1, "sent once, never again"
    assert len(graph.sends_for(message_id)) == 1
    unknown = view["outcome_unknown"]
    (claimed,) = [h["at"] for h in view["history"] if h["trigger"] == "claim_send"]
    # Since the claim of the send (made in the step, saved just after).
    assert view["created_at"] <= unknown.pop("since") <= claimed
    assert unknown == {"sends": 1, "why": why}
    assert view["failure_reason"].startswith("outcome unknown since ")
    assert summary["replayed"] == []
    assert "may already have arrived" in summary["skipped"][message_id]
    assert after["state"] == "failed", "a replay without confirmation changes nothing"


async def test_an_unknown_outcome_is_replayed_once_with_confirmation_then_never_again(
    open_app: OpenApp, graph: FakeGraph
) -> None:
    """A confirmed replay of an outcome-unknown record sends it once more (the one attempt
    the policy allows); when that send's outcome is unknown too, no replay sends it again,
    confirmed or not."""
    # Meta answers 200 without an id and, here, did not deliver: the customer got nothing.
    graph.inject(Fault(no_id=True, accepted=False), Fault(no_id=True, accepted=False))
    async with open_app(**UNKNOWN_SETTINGS) as app:
        message_id = await post_message(app)
        assert (await app.wait_for(message_id))["state"] == "failed"
        await app.wait_idle()
        first = await replay(app, message_id, confirm_unknown=True)
        view = await app.wait_for(message_id)
        await app.wait_idle()
        second = await replay(app, message_id, confirm_unknown=True)

    assert first["replayed"] == [message_id]
    assert view["state"] == "failed"
    assert view["outcome_unknown"]["sends"] == 2
    assert len(graph.message_requests()) == 2, "the first request and the confirmed replay"
    assert "no more attempts" in second["skipped"][message_id]


async def test_a_confirmed_replay_of_an_unknown_outcome_sends_the_reply_once(
    open_app: OpenApp, graph: FakeGraph
) -> None:
    """After a 200 without an id that Meta did not deliver, the operator's confirmed
    replay sends the reply and the record ends `sent`, the unknown outcome cleared."""
    graph.inject(Fault(no_id=True, accepted=False))
    async with open_app(**UNKNOWN_SETTINGS) as app:
        message_id = await post_message(app)
        assert (await app.wait_for(message_id))["state"] == "failed"
        await app.wait_idle()
        summary = await replay(app, message_id, confirm_unknown=True)
        view = await app.wait_for(message_id)

    assert summary["replayed"] == [message_id]
    assert view["state"] == "sent"
    assert view["outcome_unknown"] is None
    (send,) = graph.sends_for(message_id)
    assert view["outbound_message_id"] == send.outbound_id


@pytest.mark.parametrize(
    "fault",
    [Fault(code=131000), Fault(status=503)],
    ids=["131000", "http-503"],
)
async def test_a_graph_error_that_proves_nothing_waits_for_a_status_then_sends_once_more(
    fault: Fault, open_app: OpenApp, graph: FakeGraph
) -> None:
    """131000 or a bare 5xx may come after Graph sent (it did not, here): the claim is
    kept, the reconcile window passes without a status, and the reply is sent once more,
    the one further attempt an unknown outcome allows."""
    graph.inject(fault)
    async with open_app(**UNKNOWN_SETTINGS) as app:
        message_id = await post_message(app)
        view = await app.wait_for(message_id)
        await app.wait_idle()

    assert view["state"] == "sent"
    assert len(graph.message_requests()) == 2, "one request refused, one accepted"
    (send,) = graph.sends_for(message_id)
    assert view["outbound_message_id"] == send.outbound_id
    assert "release_send" not in [h["trigger"] for h in view["history"]]
