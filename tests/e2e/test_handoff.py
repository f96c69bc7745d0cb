"""Conversations with a person, end to end, against real `pyloto serve` processes.

Each server runs on its own SQLite file (one case on Redis too) and talks to the fake Graph
API of tests/support/fake_graph.py and, with the LLM on, to the fake OpenAI server: what
they received is what the customer would have got, so "the bot said nothing" is asserted on
the fakes, not on pyloto's own account of it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from pyloto_corp.devtools.fake_openai import DRAFT, EVENT, FakeOpenAI, json_answer
from pyloto_corp.domain.conversation import DEFAULT_ACKNOWLEDGMENT
from tests.e2e.conftest import ServeOnRedis
from tests.e2e.servers import ServeProcess, graph_variables, post_webhook, sqlite_server
from tests.e2e.support import message_view, wait_in_state
from tests.support.fake_graph import FakeGraph, Fault
from tests.support.helpers import INTERNAL_TOKEN, envelope, status, text_message
from tests.support.redis_server import RedisServer

HEADERS = {"X-Internal-Token": INTERNAL_TOKEN}
KEYWORD_TEXT = "quero falar com um atendente"
AGENT_TEXT = "Seu corte ficou marcado para sábado às 10h, combinado?"
WAIT_SECONDS = 20.0
FINAL = ("sent", "failed", "ignored", "with_agent")
TEMPLATE = "retomar_conversa"

Start = Callable[..., "Serve"]


class Serve:
    """One `pyloto serve` and an HTTP client on it."""

    def __init__(self, process: ServeProcess) -> None:
        self.process = process
        self.http = httpx.Client(base_url=process.url, headers=HEADERS, timeout=10)

    def message(self, text: str, late_seconds: float = 0.0) -> str:
        """Post one signed text message (stamped `late_seconds` ago); its id."""
        item = text_message(text)
        if late_seconds:
            item["timestamp"] = str(int(time.time() - late_seconds))
        response = post_webhook(self.http, self.process.url, envelope([item]))
        assert response.status_code == 200, response.text
        return str(item["id"])

    def record(self, message_id: str) -> dict[str, Any]:
        return message_view(self.http, "", message_id)

    def wait(self, message_id: str, states: tuple[str, ...] = FINAL) -> dict[str, Any]:
        """The record once it is in one of `states` (fails after WAIT_SECONDS)."""
        return wait_in_state(lambda: self.record(message_id), states, WAIT_SECONDS)

    def conversation(self, conversation_id: str) -> dict[str, Any]:
        response = self.http.get(f"/internal/conversations/{conversation_id}")
        assert response.status_code == 200, response.text
        return dict(response.json())

    def post(self, path: str, body: dict[str, Any] | None = None) -> httpx.Response:
        return self.http.post(path, json=body or {})


@pytest.fixture
def start(tmp_path: Path, graph: FakeGraph, fake_openai: FakeOpenAI) -> Iterator[Start]:
    """Start `pyloto serve` on the fake Graph API: `start(llm=True, VAR="x")`; each on the
    test's SQLite file (a second start with the same name reuses it, as a restart does)."""
    started: list[Serve] = []

    def create(llm: bool = False, database: str = "pyloto.db", **extra: str) -> Serve:
        variables = graph_variables(graph, fake_openai, llm) | extra
        name = f"server-{len(started)}.log"
        process = sqlite_server(tmp_path / database, tmp_path / name, **variables)
        process.start()
        serve = Serve(process)
        started.append(serve)
        return serve

    yield create
    for serve in started:
        serve.http.close()
        serve.process.cleanup()


def texts(graph: FakeGraph) -> list[str]:
    """The bodies of the text messages the fake Graph API accepted, oldest first."""
    return [s.body["text"]["body"] for s in graph.sends if s.body.get("type") == "text"]


def no_free_text_outside_the_window(graph: FakeGraph, late: set[str]) -> None:
    """Every send answering a message in `late` (stamped over 24 h ago) is a template."""
    for send in graph.sends:
        answered = send.body.get("context", {}).get("message_id")
        if answered in late:
            assert send.body["type"] == "template", "free text outside the 24-hour window"


def held(serve: Serve, graph: FakeGraph, fake_openai: FakeOpenAI, conversation: str) -> None:
    """The next two messages are kept for the agents: `with_agent`, nothing reaches the fake
    Graph API (no reply, no read receipt or typing indicator) nor the fake OpenAI."""
    sends, requests, llm = len(graph.sends), len(graph.requests), len(fake_openai.requests)
    for text in ("oi, ainda estou aqui", "qual o preço do corte?"):
        message_id = serve.message(text)
        view = serve.wait(message_id)
        assert view["state"] == "with_agent"
        assert view["conversation"] == conversation
    assert len(graph.sends) == sends, "the bot answered while a person was asked for"
    assert graph.requests[requests:] == [], "a read receipt or typing indicator went out"
    assert fake_openai.requests[llm:] == [], "the LLM was called while held for an agent"


def handed_off(serve: Serve, graph: FakeGraph, message_id: str, why: str) -> str:
    """The message got the one acknowledgment and its conversation waits for a person; the
    conversation's id."""
    view = serve.wait(message_id)
    assert view["state"] == "sent", view.get("failure_reason")
    assert view["fallback_reason"] == "handoff"
    (send,) = graph.sends_for(message_id)
    assert send.body["text"]["body"] == DEFAULT_ACKNOWLEDGMENT
    assert texts(graph) == [DEFAULT_ACKNOWLEDGMENT], "exactly one Graph send"
    conversation = serve.conversation(view["conversation"])
    assert (conversation["mode"], conversation["reason"]) == ("waiting_human", why)
    return str(view["conversation"])


# --- handing off --------------------------------------------------------------------------


@pytest.mark.parametrize("llm", [False, True], ids=["llm-off", "llm-on"])
def test_a_keyword_hands_off_with_one_acknowledgment_and_the_bot_then_stays_silent(
    start: Start, graph: FakeGraph, fake_openai: FakeOpenAI, llm: bool
) -> None:
    """'quero falar com um atendente' gets the acknowledgment (one send, no LLM call even
    with the LLM on) and the conversation waits for a person; the next two messages end
    `with_agent` with nothing sent, read-marked or asked of the LLM."""
    serve = start(llm=llm)
    message_id = serve.message(KEYWORD_TEXT)
    conversation = handed_off(serve, graph, message_id, "keyword")
    assert fake_openai.requests == [], "a keyword needs no LLM"
    held(serve, graph, fake_openai, conversation)


def test_a_keyword_hands_off_on_redis_too(
    serve_on_redis: ServeOnRedis,
    redis_server: RedisServer,
    graph: FakeGraph,
    fake_openai: FakeOpenAI,
) -> None:
    """The same on the Redis store (its Lua scripts apply the conversation's writes)."""
    process = serve_on_redis(redis_server, **graph_variables(graph, fake_openai, llm=False))
    process.start()
    serve = Serve(process)
    try:
        conversation = handed_off(serve, graph, serve.message(KEYWORD_TEXT), "keyword")
        held(serve, graph, fake_openai, conversation)
        response = serve.post(f"/internal/conversations/{conversation}/messages", {"text": "Oi!"})
        assert response.status_code == 202, response.text
        assert serve.wait(response.json()["message_id"])["state"] == "sent"
        assert serve.conversation(conversation)["mode"] == "human"
    finally:
        serve.http.close()


def test_llm1_asking_for_a_person_hands_off(
    start: Start, graph: FakeGraph, fake_openai: FakeOpenAI
) -> None:
    """LLM#1's `human_handoff` hands off as a keyword does: one acknowledgment (no LLM#2 or
    LLM#3 call), the conversation waiting; then silence."""
    fake_openai.queue(
        EVENT, json_answer({"event": "human_handoff", "confidence": 0.9, "summary": "Pessoa."})
    )
    serve = start(llm=True)
    message_id = serve.message("preciso resolver um problema com meu pedido")
    handed_off(serve, graph, message_id, "llm_handoff")
    assert len(fake_openai.seen(EVENT)) == 1
    assert len(fake_openai.requests) == 1, "no LLM#2 or LLM#3 for the acknowledgment"
    conversation = serve.record(message_id)["conversation"]
    held(serve, graph, fake_openai, conversation)


# --- agents -------------------------------------------------------------------------------


def test_an_agent_reply_is_sent_once_and_release_gives_the_bot_back_its_memory(
    start: Start, graph: FakeGraph, fake_openai: FakeOpenAI
) -> None:
    """An agent's reply: 202 with its record's id, one plain send (no `context`), `sent`;
    the conversation is the agent's. Released, the bot answers the next message, and LLM#2's
    prompt carries the agent's words."""
    serve = start(llm=True)
    conversation = handed_off(serve, graph, serve.message(KEYWORD_TEXT), "keyword")
    response = serve.post(f"/internal/conversations/{conversation}/messages", {"text": AGENT_TEXT})
    assert response.status_code == 202, response.text
    reply_id = response.json()["message_id"]
    assert serve.wait(reply_id)["state"] == "sent"
    (send,) = graph.sends_for(reply_id)
    assert send.body["text"]["body"] == AGENT_TEXT
    assert "context" not in send.body
    assert texts(graph) == [DEFAULT_ACKNOWLEDGMENT, AGENT_TEXT]
    owned = serve.conversation(conversation)
    assert (owned["mode"], owned["owner"]) == ("human", "token")
    assert [t["text"] for t in owned["turns"] if t["role"] == "agent"] == [AGENT_TEXT]

    held(serve, graph, fake_openai, conversation)
    released = serve.post(f"/internal/conversations/{conversation}/release")
    assert released.status_code == 200, released.text
    assert released.json()["mode"] == "bot"
    assert serve.post(f"/internal/conversations/{conversation}/release").status_code == 409

    answered = serve.message("e quanto custa a barba?")
    assert serve.wait(answered)["state"] == "sent"
    assert len(graph.sends_for(answered)) == 1, "the bot answers again"
    (draft,) = fake_openai.seen(DRAFT)
    assert AGENT_TEXT in str(draft["messages"]), "LLM#2 reads what the agent said"


def test_an_agent_reply_whose_server_is_killed_mid_send_is_sent_once(
    start: Start, graph: FakeGraph
) -> None:
    """kill -9 while Graph holds the answer to the agent's reply (Meta took it): after the
    restart the send is reconciled through its status webhook, never sent a second time
    (the restarted server waits WHATSAPP_RECONCILE_SECONDS for that webhook before it may
    send once more: domain/outcome.py)."""
    serve = start(WHATSAPP_RECONCILE_SECONDS="60")
    conversation = handed_off(serve, graph, serve.message(KEYWORD_TEXT), "keyword")
    answer = threading.Event()
    graph.inject(Fault(hold=answer))
    try:
        response = serve.post(
            f"/internal/conversations/{conversation}/messages", {"text": AGENT_TEXT}
        )
        assert response.status_code == 202, response.text
        reply_id = response.json()["message_id"]
        deadline = time.monotonic() + WAIT_SECONDS
        while not graph.sends_for(reply_id):
            assert time.monotonic() < deadline, "the agent's reply never reached Graph"
            time.sleep(0.02)
        serve.process.kill()
    finally:
        answer.set()
    (send,) = graph.sends_for(reply_id)

    restarted = start(WHATSAPP_RECONCILE_SECONDS="60")
    # Meta's status webhook about the send it took: the reconciliation's proof.
    sent = status(send.outbound_id, "sent", int(time.time()), callback=send.callback)
    response = post_webhook(restarted.http, restarted.process.url, envelope(statuses=[sent]))
    assert response.status_code == 200
    view = restarted.wait(reply_id, ("sent", "failed"))
    assert view["state"] == "sent", view.get("failure_reason")
    assert view["outbound_message_id"] == send.outbound_id
    assert len(graph.sends_for(reply_id)) == 1, "the agent's reply was sent twice"


def test_the_idle_timeout_gives_the_conversation_back_to_the_bot(
    start: Start, graph: FakeGraph
) -> None:
    """With HANDOFF_IDLE_SECONDS=1 the sweep releases a conversation no agent touched."""
    serve = start(HANDOFF_IDLE_SECONDS="1")
    conversation = handed_off(serve, graph, serve.message(KEYWORD_TEXT), "keyword")
    time.sleep(1.1)
    response = serve.post("/internal/sweep")
    assert response.status_code == 200, response.text
    assert response.json()["released"] == 1
    view = serve.conversation(conversation)
    assert (view["mode"], view["reason"]) == ("bot", "idle_timeout")
    assert serve.post("/internal/sweep").json()["released"] == 0
    answered = serve.message("qual o horário de vocês?")
    assert serve.wait(answered)["state"] == "sent"
    assert len(graph.sends_for(answered)) == 1


# --- the 24-hour window --------------------------------------------------------------------


def test_a_message_delivered_25_hours_late_gets_the_reengagement_template(
    start: Start, graph: FakeGraph
) -> None:
    """Outside the window the reply is the approved template, never free text."""
    serve = start(WHATSAPP_REENGAGEMENT_TEMPLATE=TEMPLATE)
    message_id = serve.message("bom dia, vocês abrem amanhã?", late_seconds=25 * 3600)
    view = serve.wait(message_id)
    assert view["state"] == "sent", view.get("failure_reason")
    (send,) = graph.sends
    assert send.body["type"] == "template"
    assert send.body["template"]["name"] == TEMPLATE
    assert send.body["template"]["language"]["code"] == "pt_BR"
    no_free_text_outside_the_window(graph, {message_id})


def test_a_message_delivered_25_hours_late_without_a_template_is_dead_lettered(
    start: Start, graph: FakeGraph
) -> None:
    """With no re-engagement template the reply is held as `window_closed`, nothing sent,
    and a replay of it is refused with that reason."""
    serve = start()
    message_id = serve.message("bom dia, vocês abrem amanhã?", late_seconds=25 * 3600)
    view = serve.wait(message_id)
    assert view["state"] == "failed"
    assert view["failure_reason"].startswith("window_closed")
    assert graph.sends == []
    replay = serve.post("/internal/replay", {"message_id": message_id})
    assert replay.status_code == 200, replay.text
    assert replay.json()["replayed"] == []
    assert replay.json()["skipped"][message_id].startswith("window_closed")
    assert serve.record(message_id)["state"] == "failed"
    assert graph.sends == []


def test_a_dead_lettered_bot_reply_is_not_replayed_while_an_agent_owns_the_conversation(
    start: Start, graph: FakeGraph
) -> None:
    """A bot reply Graph refused for good is dead-lettered; once an agent takes the
    conversation over, replaying it is refused with the reason, and nothing is sent."""
    graph.inject(Fault(code=131026))
    serve = start()
    message_id = serve.message("qual o horário de vocês?")
    view = serve.wait(message_id)
    assert view["state"] == "failed"
    taken = serve.post(f"/internal/conversations/{view['conversation']}/takeover")
    assert taken.status_code == 200, taken.text
    assert (taken.json()["mode"], taken.json()["owner"]) == ("human", "token")
    replay = serve.post("/internal/replay", {"message_id": message_id})
    assert replay.status_code == 200, replay.text
    assert replay.json()["replayed"] == []
    assert "human" in replay.json()["skipped"][message_id]
    assert serve.record(message_id)["state"] == "failed"
    assert graph.sends == []


def test_a_takeover_while_llm2_drafts_leaves_the_draft_unsent(
    start: Start, graph: FakeGraph, fake_openai: FakeOpenAI
) -> None:
    """An agent takes the conversation over while LLM#2 is still drafting: the bot's reply
    is never sent (its claim expects `bot`) and the message ends `with_agent`."""
    serve = start(llm=True)
    first = serve.message("oi")
    view = serve.wait(first)
    assert view["state"] == "sent"
    sends = len(graph.sends)
    draft = {"text": "O corte custa R$ 50."}
    fake_openai.queue(DRAFT, json_answer(draft, delay=1.5))
    drafting = serve.message("quanto custa o corte?")
    deadline = time.monotonic() + WAIT_SECONDS
    while len(fake_openai.seen(DRAFT)) < 2:
        assert time.monotonic() < deadline, "LLM#2 was never asked"
        time.sleep(0.02)
    taken = serve.post(f"/internal/conversations/{view['conversation']}/takeover")
    assert taken.status_code == 200, taken.text
    assert serve.wait(drafting)["state"] == "with_agent"
    assert len(graph.sends) == sends, "the bot's draft went out after the takeover"
