"""One answer per burst, end to end, against real `pyloto serve` processes.

A customer who writes three messages seconds apart gets one reply, made from all three; a
message written while a reply is drafted supersedes the draft; edits and deletions change
or cancel a reply not sent yet; the cap answers a customer who never stops; the LLM budget
bounds one conversation's pipelines. What the fake Graph API and the fake OpenAI server
received is what the customer got and what the LLM was asked, so that is what is asserted.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from pyloto_corp.devtools.fake_openai import DRAFT, EVENT, FakeOpenAI, json_answer
from tests.e2e.conftest import ServeOnRedis
from tests.e2e.servers import ServeProcess, graph_variables, post_webhook, sqlite_server
from tests.e2e.support import message_view, wait_in_state
from tests.support.fake_graph import FakeGraph, Fault
from tests.support.helpers import INTERNAL_TOKEN, envelope, new_wamid, now_stamp, text_message
from tests.support.redis_server import RedisServer

HEADERS = {"X-Internal-Token": INTERNAL_TOKEN}
FINAL = ("sent", "failed", "ignored", "with_agent", "merged")
WAIT_SECONDS = 30.0
BURST = ("oi", "quero saber o preço", "do corte masculino")
# The quiet window of these tests: short, but longer than the gaps between their messages.
QUIET = "1.5"

Start = Callable[..., "Customer"]


class Customer:
    """One customer writing to one `pyloto serve` (or several sharing a store)."""

    def __init__(self, processes: list[ServeProcess], sender: str) -> None:
        self.processes = processes
        self.sender = sender
        self.http = httpx.Client(headers=HEADERS, timeout=10)

    def url(self, server: int = 0) -> str:
        return self.processes[server].url

    def post(self, item: dict[str, Any], server: int = 0) -> str:
        body = envelope([item], sender=self.sender)
        response = post_webhook(self.http, self.url(server), body)
        assert response.status_code == 200, response.text
        return str(item["id"])

    def says(self, text: str, server: int = 0) -> str:
        """Post one signed text message from this customer; its id."""
        return self.post(text_message(text, sender=self.sender), server)

    def edits(self, original: str, text: str) -> str:
        return self.post(
            {
                "from": self.sender,
                "id": new_wamid(),
                "timestamp": now_stamp(),
                "type": "edit",
                "edit": {
                    "original_message_id": original,
                    "message": {"type": "text", "text": {"body": text}},
                },
            }
        )

    def deletes(self, original: str) -> str:
        return self.post(
            {
                "from": self.sender,
                "id": new_wamid(),
                "timestamp": now_stamp(),
                "type": "revoke",
                "revoke": {"original_message_id": original},
            }
        )

    def record(self, message_id: str, server: int = 0) -> dict[str, Any]:
        return message_view(self.http, self.url(server), message_id)

    def wait(self, message_id: str, states: tuple[str, ...] = FINAL) -> dict[str, Any]:
        return wait_in_state(lambda: self.record(message_id), states, WAIT_SECONDS)

    def conversation(self, key: str) -> dict[str, Any]:
        response = self.http.get(f"{self.url()}/internal/conversations/{key}")
        assert response.status_code == 200, response.text
        return dict(response.json())


def burst_variables(graph: FakeGraph, fake_openai: FakeOpenAI, llm: bool) -> dict[str, str]:
    """The fakes' variables, with coalescing on (the suite's servers have it off)."""
    coalescing = {"BURST_QUIET_SECONDS": QUIET, "BURST_MAX_WAIT_SECONDS": "12"}
    return graph_variables(graph, fake_openai, llm) | coalescing


@pytest.fixture
def start(tmp_path: Path, graph: FakeGraph, fake_openai: FakeOpenAI) -> Iterator[Start]:
    """`start(llm=True, VAR="x")`: a `pyloto serve` on the test's SQLite file (started again
    on the same file by `restart`), and a customer writing to it."""
    started: list[Customer] = []

    def create(llm: bool = True, sender: str = "5511988887777", **extra: str) -> Customer:
        variables = burst_variables(graph, fake_openai, llm) | extra
        process = sqlite_server(
            tmp_path / "pyloto.db", tmp_path / f"server-{len(started)}.log", **variables
        )
        process.start()
        customer = Customer([process], sender)
        started.append(customer)
        return customer

    yield create
    for customer in started:
        customer.http.close()
        for process in customer.processes:
            process.cleanup()


def prompts(fake_openai: FakeOpenAI, schema: str) -> list[str]:
    """The customer's part (the last user message) of each request for `schema`."""
    found = []
    for request in fake_openai.seen(schema):
        users = [m for m in request["messages"] if m["role"] == "user"]
        content = users[-1]["content"]
        found.append(content if isinstance(content, str) else str(content))
    return found


def burst(customer: Customer, texts: tuple[str, ...] = BURST, gap: float = 0.5) -> list[str]:
    ids = []
    for n, text in enumerate(texts):
        if n:
            time.sleep(gap)
        ids.append(customer.says(text, server=n % len(customer.processes)))
    return ids


def answered_once(customer: Customer, graph: FakeGraph, ids: list[str]) -> dict[str, Any]:
    """The burst `ids` got exactly one reply, to its newest message; the others merged."""
    views = [customer.wait(message_id) for message_id in ids]
    *earlier, newest = views
    assert newest["state"] == "sent", newest.get("failure_reason")
    assert [view["state"] for view in earlier] == ["merged"] * len(earlier)
    assert len(graph.sends) == 1, [s.describe() for s in graph.sends]
    assert len(graph.sends_for(ids[-1])) == 1, "the reply answers the newest message"
    return newest


# --- one reply per burst --------------------------------------------------------------------


def test_a_three_message_burst_gets_one_reply_whose_prompt_holds_all_three(
    start: Start, graph: FakeGraph, fake_openai: FakeOpenAI
) -> None:
    """ "oi" / "quero saber o preço" / "do corte masculino", 0.5 s apart: one reply, one
    LLM pipeline (LLM#1, #2, #3 once each) whose LLM#2 prompt holds the three texts; the
    first two end `merged`, their reason kept."""
    customer = start()
    ids = burst(customer)
    newest = answered_once(customer, graph, ids)
    (draft,) = prompts(fake_openai, DRAFT)
    assert all(text in draft for text in BURST), draft
    assert len(fake_openai.seen(EVENT)) == 1
    assert len(fake_openai.requests) == 3
    assert newest["results"]["burst_ids"] == ids
    first = customer.record(ids[0])
    assert first["results"]["merged_reason"].startswith("burst:")


def test_with_the_llm_off_a_burst_gets_one_template(start: Start, graph: FakeGraph) -> None:
    customer = start(llm=False)
    answered_once(customer, graph, burst(customer))


def test_a_burst_spread_across_two_instances_on_one_redis_is_answered_once(
    serve_on_redis: ServeOnRedis,
    redis_server: RedisServer,
    graph: FakeGraph,
    fake_openai: FakeOpenAI,
) -> None:
    """Messages one and three reach the first instance and two the second: whichever holds
    each, the conversation they share in Redis decides, and one reply goes out."""
    variables = burst_variables(graph, fake_openai, llm=True)
    processes = [serve_on_redis(redis_server, **variables) for _ in range(2)]
    for process in processes:
        process.start()
    customer = Customer(processes, "5511977776666")
    try:
        ids = burst(customer)
        answered_once(customer, graph, ids)
        (draft,) = prompts(fake_openai, DRAFT)
        assert all(text in draft for text in BURST), draft
    finally:
        customer.http.close()


@pytest.mark.slow
def test_a_burst_interrupted_by_kill_9_in_its_window_is_answered_once_after_restart(
    start: Start, graph: FakeGraph, fake_openai: FakeOpenAI
) -> None:
    """kill -9 while the burst waits out its window (nothing answered yet): the server
    started again on the same database answers it, once."""
    customer = start(BURST_QUIET_SECONDS="4")
    ids = burst(customer, gap=0.3)
    assert customer.wait(ids[-1], ("buffered",))["state"] == "buffered"
    customer.processes[0].kill()
    assert graph.sends == []
    again = start(BURST_QUIET_SECONDS="4", sender=customer.sender)
    answered_once(again, graph, ids)
    (draft,) = prompts(fake_openai, DRAFT)
    assert all(text in draft for text in BURST), draft


def test_a_message_written_while_the_reply_is_drafted_supersedes_the_draft(
    start: Start, graph: FakeGraph, fake_openai: FakeOpenAI
) -> None:
    """LLM#2 takes 2 s; the customer writes again meanwhile: that draft is never sent, and
    the newer message's reply is drafted from both texts."""
    fake_openai.queue(DRAFT, json_answer({"text": "Oi! Como posso ajudar?"}, delay=2.0))
    customer = start(BURST_QUIET_SECONDS="0.5")
    first = customer.says("quanto custa o corte?")
    customer.wait(first, ("llm1",))  # LLM#2 is drafting its reply
    second = customer.says("e a barba também")
    answered_once(customer, graph, [first, second])
    assert customer.record(first)["results"]["merged_reason"].startswith("superseded")
    drafts = prompts(fake_openai, DRAFT)
    assert len(drafts) == 2
    assert "quanto custa o corte?" in drafts[1]
    assert "e a barba também" in drafts[1]


def test_the_cap_answers_a_customer_who_never_stops(start: Start, graph: FakeGraph) -> None:
    """A message every 0.5 s for 9 s, with a 1.5 s quiet window and a 3 s cap: the quiet
    window alone would never answer; the cap gets replies out while the customer still
    writes, and far fewer than one per message."""
    customer = start(llm=False, BURST_MAX_WAIT_SECONDS="3")
    ids, first_reply_while_writing = [], False
    for n in range(18):
        ids.append(customer.says(f"mensagem {n}"))
        first_reply_while_writing = first_reply_while_writing or bool(graph.sends)
        time.sleep(0.5)
    views = [customer.wait(message_id) for message_id in ids]
    assert first_reply_while_writing, "no reply before the stream ended"
    assert 2 <= len(graph.sends) <= 5, len(graph.sends)
    assert {view["state"] for view in views} == {"sent", "merged"}
    assert sum(view["state"] == "sent" for view in views) == len(graph.sends)


def test_a_dead_letter_replayed_after_a_newer_message_is_sent_not_superseded(
    start: Start, graph: FakeGraph
) -> None:
    """The customer's first reply is refused for good (dead letter) and their next message
    is answered without it (a failed message closes its burst): replaying the first, while
    the newer message is still the customer's newest and the cap not reached, sends its
    reply; nothing merges it away."""
    customer = start(llm=False)
    graph.inject(Fault(code=131026))
    first = customer.says("quero marcar um horário")
    assert customer.wait(first)["state"] == "failed"
    second = customer.says("para amanhã")
    assert customer.wait(second)["state"] == "sent"
    replayed = customer.http.post(f"{customer.url()}/internal/replay", json={"message_id": first})
    assert replayed.status_code == 200, replayed.text
    assert replayed.json()["replayed"] == [first]
    view = wait_in_state(lambda: customer.record(first), ("sent", "merged"), WAIT_SECONDS)
    assert view["state"] == "sent", view.get("results")
    assert len(graph.sends_for(first)) == 1
    assert len(graph.sends_for(second)) == 1


# --- edits and deletions ----------------------------------------------------------------------


def test_an_edit_before_the_reply_is_read_instead_of_the_text_it_edits(
    start: Start, graph: FakeGraph, fake_openai: FakeOpenAI
) -> None:
    customer = start()
    original = customer.says("quero cortar o cabelo amanhã")
    edit = customer.edits(original, "quero cortar o cabelo no sábado")
    answered_once(customer, graph, [original, edit])
    (draft,) = prompts(fake_openai, DRAFT)
    assert "sábado" in draft
    assert "amanhã" not in draft


def test_a_deletion_before_the_reply_cancels_it(
    start: Start, graph: FakeGraph, fake_openai: FakeOpenAI
) -> None:
    customer = start()
    original = customer.says("meu cpf é 123.456.789-09")
    deletion = customer.deletes(original)
    views = [customer.wait(message_id) for message_id in (original, deletion)]
    assert [view["state"] for view in views] == ["merged", "merged"]
    assert views[1]["results"]["merged_reason"].startswith("revoked")
    time.sleep(float(QUIET) + 0.5)
    assert graph.sends == []
    assert fake_openai.requests == []


def test_an_edit_or_deletion_after_the_reply_is_noted_and_nothing_is_sent(
    start: Start, graph: FakeGraph, fake_openai: FakeOpenAI
) -> None:
    customer = start(BURST_QUIET_SECONDS="0.3")
    original = customer.says("quero marcar um horário")
    view = customer.wait(original)
    assert view["state"] == "sent"
    calls = len(fake_openai.requests)
    for change in (
        lambda: customer.edits(original, "quero marcar dois horários"),
        lambda: customer.deletes(original),
    ):
        changed = customer.wait(change())
        assert (changed["state"], changed["results"]["ignored_reason"]) == (
            "ignored",
            "after_reply",
        )
    assert len(graph.sends) == 1
    assert len(fake_openai.requests) == calls
    actions = [entry["action"] for entry in customer.conversation(view["conversation"])["audit"]]
    assert "edited a message after its reply: nothing is sent" in actions
    assert "deleted a message after its reply: nothing is sent" in actions


# --- the LLM budget ---------------------------------------------------------------------------


def test_beyond_the_llm_budget_a_burst_gets_its_template(
    start: Start, graph: FakeGraph, fake_openai: FakeOpenAI
) -> None:
    """One LLM pipeline a minute for this conversation: the second burst is answered by the
    template (fallback `llm_budget`), with no LLM call."""
    customer = start(BURST_QUIET_SECONDS="0.3", LLM_MAX_PIPELINES_PER_MINUTE="1")
    first = customer.wait(customer.says("oi, tudo bem?"))
    assert (first["state"], first["fallback_reason"]) == ("sent", None)
    calls = len(fake_openai.requests)
    second = customer.wait(customer.says("quanto custa?"))
    assert (second["state"], second["fallback_reason"]) == ("sent", "llm_budget")
    assert len(fake_openai.requests) == calls
    assert len(graph.sends) == 2


# --- the typing indicator ---------------------------------------------------------------------


@pytest.mark.slow
def test_the_typing_indicator_is_shown_again_when_the_reply_takes_over_20_seconds(
    start: Start, graph: FakeGraph, fake_openai: FakeOpenAI
) -> None:
    """LLM#1 and LLM#2 take 11 s each: the reply's pipeline passes 20 s, and the message is
    marked read with the typing indicator again before the reply goes out (WhatsApp drops
    the indicator after 25 s)."""
    fake_openai.queue(
        EVENT, json_answer({"event": "other", "confidence": 0.9, "summary": "x"}, delay=11.0)
    )
    fake_openai.queue(DRAFT, json_answer({"text": "Oi! Como posso ajudar?"}, delay=11.0))
    customer = start(BURST_QUIET_SECONDS="0.3", OPENAI_TIMEOUT_SECONDS="20")
    message_id = customer.says("oi")
    assert customer.wait(message_id)["state"] == "sent"
    reads = [r for r in graph.reads if r.get("message_id") == message_id]
    assert len(reads) == 2, reads
    assert all(read.get("typing_indicator") == {"type": "text"} for read in reads)
