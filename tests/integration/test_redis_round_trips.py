"""Redis round trips a message costs, per transition, on a real redis-server (MONITOR).

Ingest, then each task delivered through the Advancer wired by bootstrap on the Redis store.
The queue and the outbox are in-memory stand-ins of pyloto's own ports, and the LLM a
scripted Assistant, so every command Redis sees comes from the store. Each path is run once
to load the scripts, then measured on a second message of the same customer (whose LLM#2
step reads the first exchange back).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import pytest

from pyloto_corp.adapters.redis.store import RedisStore
from pyloto_corp.adapters.whatsapp_webhook import parse_webhook
from pyloto_corp.ai.schemas import EventDetection, MessageChoice, ReplyDraft
from pyloto_corp.application.ports import (
    CustomerRequest,
    LeaseHold,
    LLMFailure,
    LLMResult,
    SlotRequest,
    StepCommit,
    StepSave,
    Writes,
)
from pyloto_corp.application.step_context import LLMRouting, Pacing
from pyloto_corp.bootstrap import Container, bootstrap
from pyloto_corp.config import Settings
from pyloto_corp.domain.conversation import BOT, HUMAN
from pyloto_corp.domain.records import Record, Turn
from pyloto_corp.domain.writes import ConversationWrite
from tests.integration.factories import record
from tests.integration.test_redis_store import client_commands, open_store, signed_body
from tests.support.redis_server import RedisServer
from tests.unit.fakes import FakeOutbox, FakeQueue

pytestmark = pytest.mark.anyio

# The most Redis round trips one transition may cost, on average over a message's path.
ROUND_TRIPS_PER_TRANSITION = 2


@dataclass
class ScriptedAssistant:
    """The Assistant port answering at once; `fail` names steps whose call fails."""

    fail: frozenset[str] = frozenset()
    histories: list[list[Turn]] = field(default_factory=list)

    def _result(self, step: str, value: Any) -> LLMResult[Any]:
        if step in self.fail:
            raise LLMFailure("timeout", "scripted")
        return LLMResult(value, latency_ms=1.0, input_tokens=10, output_tokens=5, model="m")

    async def transcribe(self, audio: bytes, mime_type: str) -> LLMResult[str]:
        return self._result("media", "Quanto custa o corte?")

    async def describe_image(self, image: bytes, mime_type: str, caption: str) -> LLMResult[str]:
        return self._result("media", "Foto de um corte de cabelo curto.")

    async def detect_event(self, text: str, kind: str) -> LLMResult[EventDetection]:
        detection = EventDetection(event="price", confidence=0.9, summary="Quer o preço.")
        return self._result("llm1", detection)

    async def draft_reply(
        self, text: str, event: str, summary: str, history: Sequence[Turn]
    ) -> LLMResult[ReplyDraft]:
        self.histories.append(list(history))
        return self._result("llm2", ReplyDraft(text="O corte custa R$ 50."))

    async def choose_message_type(self, draft: str, event: str) -> LLMResult[MessageChoice]:
        parts: dict[str, Any] = dict.fromkeys(
            ["header", "footer", "buttons", "list_button_text", "sections", "cta_display_text"]
        )
        choice = MessageChoice.model_validate(
            {**parts, "type": "text", "body": draft, "cta_url": None}
        )
        return self._result("llm3", choice)


def round_trips(commands: list[str]) -> int:
    """Client round trips in a list of command names: a MULTI…EXEC block is one."""
    count, in_multi = 0, False
    for name in commands:
        if name == "MULTI":
            count, in_multi = count + 1, True
        elif name in ("EXEC", "DISCARD"):
            in_multi = False
        elif not in_multi:
            count += 1
    return count


async def one_message(container: Container, queue: FakeQueue, text: str) -> str:
    """Ingest one message and deliver its tasks (first attempts) until none is left; its id."""
    body, (message_id,) = signed_body(text)
    await container.ingestor.ingest(parse_webhook(body))
    while queue.tasks:
        task = queue.tasks.pop(0)
        await container.advancer.deliver(task.message_id, task.state, 1, 10, task.traceparent)
    return message_id


async def measure(
    redis: RedisServer,
    settings: Settings,
    assistant: ScriptedAssistant | None,
    paced: bool,
    texts: tuple[str, str] = ("Oi, quanto custa o corte?", "E a barba?"),
) -> tuple[Record, list[str]]:
    """A warm-up message, then the commands the store sent for a second one."""
    queue = FakeQueue()
    routing = LLMRouting(assistant) if assistant is not None else None
    container = bootstrap(settings, outbox=FakeOutbox(), queue=queue, assistant=routing)
    if paced:
        container.advancer.context = replace(
            container.advancer.context, pacing=Pacing(per_seconds=0.01, burst=5)
        )
    try:
        await one_message(container, queue, texts[0])
        async with client_commands(redis.url) as commands:
            message_id = await one_message(container, queue, texts[1])
        done = await container.store.get(message_id)
    finally:
        await container.stop()
    assert done is not None
    return done, commands


PATHS: dict[str, tuple[Callable[[], ScriptedAssistant | None], bool, list[str]]] = {
    "llm": (
        ScriptedAssistant,
        False,
        ["received", "deduped", "llm1", "llm2", "llm3", "queued_outbound", "sending", "sent"],
    ),
    "llm-paced": (
        ScriptedAssistant,
        True,
        ["received", "deduped", "llm1", "llm2", "llm3", "queued_outbound", "sending", "sent"],
    ),
    "fallback": (
        lambda: None,
        False,
        ["received", "deduped", "fallback", "queued_outbound", "sending", "sent"],
    ),
    "llm2-fails": (
        lambda: ScriptedAssistant(fail=frozenset({"llm2"})),
        False,
        ["received", "deduped", "llm1", "fallback", "queued_outbound", "sending", "sent"],
    ),
}


@pytest.mark.parametrize("path", list(PATHS))
async def test_each_transition_costs_at_most_two_round_trips(
    private_redis: RedisServer,
    redis_prefix: str,
    make_settings: Callable[..., Settings],
    path: str,
) -> None:
    """From ingest to `sent`, on the LLM path (with and without pacing), the fallback path
    and the path where LLM#2 fails: the store's round trips, ingest included, are at most
    two a transition; each is one script call, and LLM#2 was shown the earlier exchange."""
    make_assistant, paced, states = PATHS[path]
    assistant = make_assistant()
    settings = make_settings(
        STATE_BACKEND="redis", REDIS_URL=private_redis.url, REDIS_KEY_PREFIX=redis_prefix
    )

    done, commands = await measure(private_redis, settings, assistant, paced)

    transitions = len(done.history)
    assert [done.history[0].source, *(h.dest for h in done.history)] == states
    assert round_trips(commands) <= ROUND_TRIPS_PER_TRANSITION * transitions, commands
    assert set(commands) == {"EVALSHA"}, "no separate read, write or claim"
    if assistant is not None and "llm1" in states:
        shown = assistant.histories[-1]  # the first message and its reply
        assert [(t.role, t.text) for t in shown][:1] == [("customer", "Oi, quanto custa o corte?")]
        assert [t.role for t in shown] == ["customer", "business"]


async def _accept_and_claim(
    store: RedisStore, url: str, user_key: str, at: float
) -> tuple[list[StepSave], list[str]]:
    """A message's accept, resolving its customer and writing their conversation, then its
    send claim (a pacing token) guarded by the conversation's mode, on the wire: what each
    answered, and the commands the client sent for both."""
    created = record(created_at=at, updated_at=at)
    assert await store.create_if_absent([created]) == [True]
    accepted = replace(created, state="deduped", version=1)
    claimed = replace(accepted, state="sending", version=2)
    accept = StepCommit(
        accepted,
        0,
        LeaseHold(f"{created.message_id}:received", "me"),
        writes=Writes(
            customer=CustomerRequest(None, user_key),
            conversation=ConversationWrite(customer_at=at, message_id=created.message_id),
        ),
    )
    async with client_commands(url) as commands:
        done = [await store.finish_step(accept)]
        conversation = done[0].customer
        claim = StepCommit(
            replace(claimed, conversation=conversation),
            1,
            LeaseHold(f"{created.message_id}:deduped", "me"),
            writes=Writes(
                slot=SlotRequest(conversation, at, 1.0, 5),
                conversation=ConversationWrite(key=conversation, expect_mode=BOT),
            ),
        )
        done.append(await store.finish_step(claim))
    return done, commands


async def test_a_transition_writing_the_conversation_is_still_one_call(
    private_redis: RedisServer, redis_prefix: str
) -> None:
    """An accept that writes its customer's conversation and a send claim guarded by the
    conversation's mode are one script call each, whether the guard lets the claim through
    or refuses it (an agent took the conversation over)."""
    store = open_store(private_redis.url, redis_prefix)
    try:
        user = "u" * 32
        await _accept_and_claim(store, private_redis.url, user, 1_000.0)  # loads the scripts
        done, commands = await _accept_and_claim(store, private_redis.url, user, 1_001.0)
        assert [(d.saved, d.mode_changed) for d in done] == [(True, False), (True, False)]
        assert commands == ["EVALSHA", "EVALSHA"]

        taken = ConversationWrite(mode=HUMAN, owner="ana", at=1_002.0)
        assert await store.change_conversation(done[0].customer, taken) is not None
        done, commands = await _accept_and_claim(store, private_redis.url, user, 1_003.0)
        assert [(d.saved, d.mode_changed) for d in done] == [(True, False), (False, True)]
        assert commands == ["EVALSHA", "EVALSHA"]
    finally:
        await store.close()


HANDOFF_PATHS: dict[str, tuple[tuple[str, str], list[str]]] = {
    # A keyword: the conversation to `waiting_human` in the save that falls back.
    "keyword": (
        ("Oi, quanto custa o corte?", "quero falar com um atendente"),
        ["received", "deduped", "fallback", "queued_outbound", "sending", "sent"],
    ),
    # Held for the agent: the guard on the conversation's mode and the customer's turn.
    "held": (
        ("quero falar com um atendente", "E a barba?"),
        ["received", "deduped", "with_agent"],
    ),
}


@pytest.mark.parametrize("path", list(HANDOFF_PATHS))
async def test_handoff_transitions_cost_at_most_two_round_trips(
    private_redis: RedisServer,
    redis_prefix: str,
    make_settings: Callable[..., Settings],
    path: str,
) -> None:
    """A handoff by keyword and a message held for an agent write the conversation in the
    transition's own script call: still at most two round trips a transition (the ingest's
    one call aside: a held message's path is too short to spread it, 5 calls for 2)."""
    texts, states = HANDOFF_PATHS[path]
    settings = make_settings(
        STATE_BACKEND="redis", REDIS_URL=private_redis.url, REDIS_KEY_PREFIX=redis_prefix
    )

    done, commands = await measure(private_redis, settings, None, False, texts)

    transitions = len(done.history)
    assert [done.history[0].source, *(h.dest for h in done.history)] == states
    print(f"\n{path}: {round_trips(commands)} round trips, {transitions} transitions")
    ingest = 1  # the record's create
    assert round_trips(commands) - ingest <= ROUND_TRIPS_PER_TRANSITION * transitions, commands
    assert set(commands) == {"EVALSHA"}, "no separate read, write or claim"
