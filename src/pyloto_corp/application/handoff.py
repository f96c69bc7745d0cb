"""The conversation's say over each message: the gate the Advancer runs before the steps of
the states a bot reply goes through (`registry.GATED_STATES`).

While a person is asked for or owns the conversation the bot is silent, and the pipeline
enforces it, not a convention: a message then ends in `with_agent` (no LLM call, no typing
indicator, no reply), and the send claim of a bot reply expects the conversation still in
`bot` (a takeover while the LLM was drafting leaves the draft unsent). A handoff keyword,
or LLM#1's `human_handoff`, moves the conversation to `waiting_human` and the message to
the one acknowledgment (the `handoff` fallback), in the same save.
"""

from __future__ import annotations

import logging
from dataclasses import replace

from pyloto_corp.application.llm_steps import (
    CONVERSATION_TURNS,
    CONVERSATION_WINDOW_SECONDS,
    customer_key,
    customer_text,
    fall_back,
    for_llm,
)
from pyloto_corp.application.step_context import StepContext
from pyloto_corp.domain.conversation import (
    AGENT_REPLY_KIND,
    BOT,
    HANDOFF_REASON,
    HUMAN,
    WAITING_HUMAN,
)
from pyloto_corp.domain.events import Event, HeldForAgent
from pyloto_corp.domain.privacy import message_ref
from pyloto_corp.domain.records import Record, Turn
from pyloto_corp.domain.writes import ConversationWrite, TurnsWrite

log = logging.getLogger(__name__)

# The inbound kind of what the business sent from the WhatsApp Business app on the same
# number (`smb_message_echoes`); an agent's reply written in pyloto is AGENT_REPLY_KIND.
ECHO_KIND = "echo"
# Who an echo's takeover names as the conversation's owner.
BUSINESS_APP = "whatsapp_business_app"
# The LLM#1 event that asks for a person.
HANDOFF_EVENT = "human_handoff"


def speaks_for_bot(record: Record) -> bool:
    """Whether `record` is a bot reply the conversation's mode silences (an agent's reply
    and the handoff's own acknowledgment are not)."""
    return record.inbound.kind != AGENT_REPLY_KIND and record.fallback_reason != HANDOFF_REASON


def conversation_of(record: Record, ctx: StepContext) -> str:
    return customer_key(record, ctx.hash_key)


def mode_of(ctx: StepContext) -> str:
    """The conversation's mode as loaded with the record (`bot` when none is stored)."""
    return ctx.conversation.mode if ctx.conversation is not None else BOT


async def gate(record: Record, ctx: StepContext) -> Event | ConversationWrite | None:
    """What the conversation decides before the record's step: an event that replaces the
    step (held for an agent, a handoff), a write the step's event carries (a release), or
    None: the step runs as it would."""
    if not speaks_for_bot(record):
        return None
    mode = mode_of(ctx)
    if record.inbound.kind == ECHO_KIND:
        return _echo(record, ctx, mode)
    text = customer_text(record)
    fresh = record.state in ("deduped", "media")  # the customer's text is read first here
    if mode != BOT:
        if fresh and ctx.handoff.release_keywords.match(text):
            return _change(record, ctx, mode, BOT, "customer_keyword", "customer")
        return _held(record, ctx, mode)
    if fresh and ctx.handoff.keywords.match(text):
        if record.state == "deduped":
            await mark_read(record, ctx)  # the acknowledgment answers it at once
        return _request_human(record, ctx, "keyword")
    if record.state == "llm1" and record.results.event == HANDOFF_EVENT:
        return _request_human(record, ctx, "llm_handoff")
    if record.state == "deduped":
        await mark_read(record, ctx)
    return None


def bot_guard(record: Record, ctx: StepContext) -> ConversationWrite | None:
    """What a bot reply's send claim expects: the conversation still in `bot` (so an agent
    taking over while the reply was drafted leaves it unsent: the retry holds it)."""
    if not speaks_for_bot(record):
        return None
    return ConversationWrite(key=conversation_of(record, ctx), expect_mode=BOT)


def _change(
    record: Record, ctx: StepContext, mode: str, to: str, reason: str, who: str
) -> ConversationWrite:
    now = ctx.clock()
    return ConversationWrite(
        key=conversation_of(record, ctx),
        expect_mode=mode,
        mode=to,
        reason=reason,
        at=now,
        audit=(who, f"{mode} -> {to} ({reason})"),
    )


def _request_human(record: Record, ctx: StepContext, why: str) -> Event:
    """The conversation to `waiting_human` and this message to the acknowledgment, in one
    save; a concurrent message that got there first makes this save fail its expected mode,
    so the retry holds this one instead (one acknowledgment per handoff)."""
    write = _change(record, ctx, BOT, WAITING_HUMAN, why, "pyloto")
    log.info(
        "handoff_requested",
        extra={"event": "handoff_requested", "ref": message_ref(record.message_id), "why": why},
    )
    step = "llm2" if record.state == "llm1" else "handoff"
    return replace(fall_back(record, step, HANDOFF_REASON, why), conversation=write)


def _held(record: Record, ctx: StepContext, mode: str) -> HeldForAgent:
    """The message kept for the agents; its words become a turn of the conversation."""
    said = for_llm(customer_text(record), record, mask_pii=True)
    turns = [Turn("customer", said, ctx.clock())] if said.strip() else []
    guard = ConversationWrite(key=conversation_of(record, ctx), expect_mode=mode)
    return HeldForAgent(mode=mode, turns=_turns(record, ctx, turns), conversation=guard)


def _echo(record: Record, ctx: StepContext, mode: str) -> HeldForAgent:
    """What the business sent from the WhatsApp Business app: never answered; it takes the
    conversation over (the bot stops talking over the person on the phone), and its text is
    kept as an agent's turn."""
    now = ctx.clock()
    write = ConversationWrite(
        key=conversation_of(record, ctx),
        expect_mode=mode,
        mode=None if mode == HUMAN else HUMAN,
        reason="business_app_echo",
        owner=BUSINESS_APP,
        at=now,
        agent_activity=True,
        audit=(BUSINESS_APP, "replied from the WhatsApp Business app"),
    )
    said = for_llm(record.inbound.text or "", record, mask_pii=True)
    turns = [Turn("agent", said, now)] if said.strip() else []
    return HeldForAgent(mode=HUMAN, turns=_turns(record, ctx, turns), conversation=write)


def _turns(record: Record, ctx: StepContext, turns: list[Turn]) -> TurnsWrite | None:
    if not turns:
        return None
    return TurnsWrite(
        conversation_of(record, ctx), turns, CONVERSATION_WINDOW_SECONDS, CONVERSATION_TURNS
    )


async def mark_read(record: Record, ctx: StepContext) -> None:
    """Show the customer the message was read (and, if enabled, that a reply is coming): in
    `deduped`, once the conversation is known, so a conversation with a person gets no
    typing indicator from the bot. Best effort: a failure is logged and never holds the
    reply back."""
    try:
        await ctx.outbox.mark_read(record.message_id, _number(record, ctx))
    except Exception as error:  # any failure: the read receipt is only a courtesy
        log.warning(
            "mark_read_failed",
            extra={
                "event": "mark_read_failed",
                "ref": message_ref(record.message_id),
                "error": f"{type(error).__name__}: {error}"[:200],
            },
        )


def _number(record: Record, ctx: StepContext) -> str:
    return ctx.numbers.sender_of(record.inbound.phone_number_id) or ""
