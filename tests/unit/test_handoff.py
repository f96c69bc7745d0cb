"""The conversation's gate before each bot step, and the send claim's 24-hour window, run
alone on the fakes of our ports."""

from __future__ import annotations

from dataclasses import replace

import pytest

from pyloto_corp.application.handoff import bot_guard, gate
from pyloto_corp.application.step_context import Handoff, StepContext
from pyloto_corp.application.steps import WINDOW_CLOSED, claim_send, queue_reply
from pyloto_corp.domain.conversation import (
    AGENT_REPLY_KIND,
    BOT,
    DEFAULT_ACKNOWLEDGMENT,
    DEFAULT_HANDOFF_KEYWORDS,
    HANDOFF_REASON,
    HUMAN,
    WAITING_HUMAN,
    WINDOW_SECONDS,
    Conversation,
    Keywords,
)
from pyloto_corp.domain.events import (
    DeadLettered,
    FellBack,
    HeldForAgent,
    ReplyQueued,
    SendClaimed,
)
from pyloto_corp.domain.writes import ConversationWrite
from tests.unit.fakes import FakeClock, FakeOutbox, MakeRecord

pytestmark = pytest.mark.anyio

HANDOFF = Handoff(
    keywords=Keywords.of(DEFAULT_HANDOFF_KEYWORDS),
    release_keywords=Keywords.of(["falar com o robo"]),
    reengagement=None,
)
KEY = "c" * 32
STAMP = 1_732_531_200  # the records' timestamp (tests/unit/conftest.py's make_record)


def with_conversation(
    context: StepContext,
    mode: str | None,
    customer_at: float = STAMP,
    reengagement: tuple[str, str] | None = None,
) -> StepContext:
    conversation = None if mode is None else Conversation(KEY, mode, customer_at=customer_at)
    handoff = replace(HANDOFF, reengagement=reengagement)
    return replace(context, handoff=handoff, conversation=conversation)


@pytest.mark.parametrize("mode", [None, BOT])
async def test_a_keyword_asks_for_a_person_in_the_save_of_the_acknowledgment(
    make_record: MakeRecord, context: StepContext, outbox: FakeOutbox, mode: str | None
) -> None:
    """'Quero falar com um ATENDENTE!' in `deduped`: the acknowledgment's fallback and the
    conversation to `waiting_human` (expected in `bot`) in one event; the message is marked
    read (its acknowledgment answers it at once)."""
    record = make_record(state="deduped", text="Quero falar com um ATENDENTE!")
    event = await gate(record, with_conversation(context, mode))
    assert isinstance(event, FellBack)
    assert (event.reason, event.step) == (HANDOFF_REASON, "handoff")
    write = event.conversation
    assert write is not None
    assert (write.expect_mode, write.mode, write.reason) == (BOT, WAITING_HUMAN, "keyword")
    assert outbox.read == [record.message_id]


async def test_llm1s_human_handoff_asks_for_a_person(
    make_record: MakeRecord, context: StepContext
) -> None:
    record = make_record(state="llm1", results={"event": "human_handoff"})
    event = await gate(record, with_conversation(context, BOT))
    assert isinstance(event, FellBack)
    assert event.conversation is not None
    assert event.conversation.reason == "llm_handoff"


async def test_a_keyword_is_not_read_again_after_llm1(
    make_record: MakeRecord, context: StepContext
) -> None:
    """Only the first look at the customer's text (deduped, media) hands off by keyword."""
    record = make_record(state="llm1", text="atendente", results={"event": "price"})
    assert await gate(record, with_conversation(context, BOT)) is None


async def test_a_bot_message_without_a_keyword_runs_its_step_and_is_marked_read(
    make_record: MakeRecord, context: StepContext, outbox: FakeOutbox
) -> None:
    record = make_record(state="deduped", text="qual o preço do corte?")
    assert await gate(record, with_conversation(context, BOT)) is None
    assert len(outbox.read) == 1


@pytest.mark.parametrize("mode", [WAITING_HUMAN, HUMAN])
@pytest.mark.parametrize("state", ["deduped", "llm1", "llm2", "llm3", "fallback"])
async def test_while_a_person_is_asked_for_or_owns_it_every_bot_step_is_held(
    make_record: MakeRecord, context: StepContext, outbox: FakeOutbox, mode: str, state: str
) -> None:
    """Held for the agent (even a keyword again), guarded by the mode; no read receipt."""
    record = make_record(state=state, text="atendente, por favor", results={"event": "price"})
    event = await gate(record, with_conversation(context, mode))
    assert isinstance(event, HeldForAgent)
    assert event.conversation is not None
    assert event.conversation == ConversationWrite(key=event.conversation.key, expect_mode=mode)
    assert outbox.read == []


async def test_a_release_keyword_gives_the_conversation_back(
    make_record: MakeRecord, context: StepContext
) -> None:
    record = make_record(state="deduped", text="quero falar com o robô")
    write = await gate(record, with_conversation(context, HUMAN))
    assert isinstance(write, ConversationWrite)
    assert (write.expect_mode, write.mode, write.reason) == (HUMAN, BOT, "customer_keyword")


async def test_the_acknowledgment_and_an_agents_reply_pass_the_gate(
    make_record: MakeRecord, context: StepContext
) -> None:
    """The handoff's own reply and an agent's reply are not the bot's: never held."""
    ctx = with_conversation(context, WAITING_HUMAN)
    acknowledgment = make_record(state="fallback", fallback_reason=HANDOFF_REASON)
    assert await gate(acknowledgment, ctx) is None
    assert bot_guard(acknowledgment, ctx) is None
    agent = make_record(kind=AGENT_REPLY_KIND, state="queued_outbound")
    assert await gate(agent, ctx) is None
    assert bot_guard(agent, ctx) is None
    guard = bot_guard(make_record(state="queued_outbound"), ctx)
    assert guard is not None
    assert guard.expect_mode == BOT, "a bot reply's claim expects the conversation in bot"


async def test_the_acknowledgment_is_the_setting(
    make_record: MakeRecord, context: StepContext
) -> None:
    record = make_record(state="fallback", fallback_reason=HANDOFF_REASON)
    event = await queue_reply(record, with_conversation(context, WAITING_HUMAN))
    assert isinstance(event, ReplyQueued)
    assert event.reply["text"]["body"] == DEFAULT_ACKNOWLEDGMENT
    assert "context" in event.reply, "the acknowledgment answers the customer's message"


# --- the 24-hour window at the send claim ---------------------------------------------------


async def test_within_the_window_the_reply_is_claimed_as_it_is(
    make_record: MakeRecord, context: StepContext, clock: FakeClock
) -> None:
    record = make_record(state="queued_outbound")
    clock.advance(WINDOW_SECONDS - 1 - (clock() - STAMP))
    event = await claim_send(record, with_conversation(context, BOT))
    assert isinstance(event, SendClaimed)
    assert event.reply is None, "the reply is not replaced"


async def test_outside_the_window_without_a_template_the_reply_is_dead_lettered(
    make_record: MakeRecord, context: StepContext, clock: FakeClock
) -> None:
    record = make_record(state="queued_outbound")
    clock.advance(WINDOW_SECONDS - (clock() - STAMP))
    event = await claim_send(record, with_conversation(context, BOT))
    assert isinstance(event, DeadLettered)
    assert event.reason == WINDOW_CLOSED
    assert event.reason.startswith("window_closed")


async def test_outside_the_window_the_reengagement_template_replaces_the_reply(
    make_record: MakeRecord, context: StepContext, clock: FakeClock
) -> None:
    record = make_record(state="queued_outbound")
    clock.advance(WINDOW_SECONDS + 60 - (clock() - STAMP))
    ctx = with_conversation(context, BOT, reengagement=("retomar", "pt_BR"))
    event = await claim_send(record, ctx)
    assert isinstance(event, SendClaimed)
    assert event.reply is not None
    assert event.reply["type"] == "template"
    assert event.reply["template"] == {"name": "retomar", "language": {"code": "pt_BR"}}
    assert event.template == "retomar"


async def test_a_newer_customer_message_keeps_the_window_of_an_older_reply_open(
    make_record: MakeRecord, context: StepContext, clock: FakeClock
) -> None:
    """The conversation's newest customer message counts, not only the record's own."""
    record = make_record(state="queued_outbound")
    clock.advance(WINDOW_SECONDS + 60 - (clock() - STAMP))
    ctx = with_conversation(context, BOT, customer_at=clock() - 3600)
    assert isinstance(await claim_send(record, ctx), SendClaimed)


async def test_an_agents_reply_outside_the_window_is_held_too(
    make_record: MakeRecord, context: StepContext, clock: FakeClock
) -> None:
    """An agent's reply is stamped when written; only the customer's messages open the
    window."""
    clock.advance(WINDOW_SECONDS + 60 - (clock() - STAMP))
    agent = make_record(kind=AGENT_REPLY_KIND, state="queued_outbound")
    agent = replace(agent, inbound=replace(agent.inbound, timestamp=int(clock())))
    event = await claim_send(agent, with_conversation(context, HUMAN))
    assert isinstance(event, DeadLettered)
    assert event.reason.startswith("window_closed")
