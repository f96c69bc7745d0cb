"""Conversations as operators and agents use them: take over, release, reply, the idle
timeout; and every mode change checked against statecharts/conversation.yaml, drawn as a
span and announced (the handoff webhook)."""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace

from opentelemetry import trace

from pyloto_corp.application.ports import (
    ConversationStore,
    QueueUnavailable,
    RecordStore,
    Task,
    TaskQueue,
)
from pyloto_corp.domain.conversation import (
    AGENT_REPLY_KIND,
    BOT,
    HUMAN,
    REASONS,
    Conversation,
)
from pyloto_corp.domain.machine import IllegalTransition, LifecycleMachine
from pyloto_corp.domain.records import Record
from pyloto_corp.domain.writes import ConversationWrite

log = logging.getLogger(__name__)

# The longest agent reply pyloto takes (WhatsApp's text body limit).
AGENT_TEXT_LIMIT = 4096


@dataclass(frozen=True)
class ModeChange:
    """A conversation moved from `previous` to `mode` for `reason` at `at` (no personal
    data: the key is a keyed hash)."""

    conversation: str
    previous: str
    mode: str
    reason: str
    at: float
    version: int = 0


Announce = Callable[[ModeChange], Awaitable[None]]


async def _silent(change: ModeChange) -> None:
    return None


class ConversationRefused(Exception):
    """An operator's or agent's request the conversation's state does not allow (the
    message says why; the HTTP layer answers 409)."""


class ConversationMissing(Exception):
    """No conversation has this id (the HTTP layer answers 404)."""


class ModeRules:
    """The conversation statechart as a machine: each mode change is one of its
    transitions (its trigger named by the reason), drawn as a span and announced."""

    def __init__(
        self,
        machine: LifecycleMachine | None,
        announce: Announce = _silent,
        tracer: trace.Tracer | None = None,
    ) -> None:
        """`tracer`: the container's (telemetry's) tracer; the spans are exported only
        through it (pyloto sets no global tracer provider)."""
        self.machine = machine
        self.announce = announce
        self.tracer = tracer or trace.NoOpTracer()

    def check(self, previous: str, write: ConversationWrite) -> str:
        """The transition's trigger; IllegalTransition when the chart does not allow it."""
        trigger = REASONS.get(write.reason)
        if trigger is None:
            raise IllegalTransition(f"no conversation transition for reason '{write.reason}'")
        if self.machine is None:
            return trigger
        dest = self.machine.fire(previous, trigger)
        if dest != write.mode:
            raise IllegalTransition(f"'{trigger}' leads from '{previous}' to '{dest}'")
        return trigger

    async def changed(
        self, key: str, previous: str, write: ConversationWrite, version: int
    ) -> None:
        """Record a change the store made: a span, a log line, the announcement (best effort:
        a queue that refuses it is logged; the change itself is saved)."""
        assert write.mode is not None
        trigger = REASONS.get(write.reason, "change")
        with self.tracer.start_as_current_span(f"conversation {trigger}") as span:
            span.set_attribute("pyloto.conversation.id", key)
            span.set_attribute("pyloto.conversation.from", previous)
            span.set_attribute("pyloto.conversation.to", write.mode)
            span.set_attribute("pyloto.conversation.reason", write.reason)
        log.info(
            "conversation_mode_changed",
            extra={
                "event": "conversation_mode_changed",
                "conversation": key[:12],
                "from": previous,
                "to": write.mode,
                "reason": write.reason,
            },
        )
        change = ModeChange(key, previous, write.mode, write.reason, write.at, version)
        try:
            await self.announce(change)
        except QueueUnavailable as error:
            log.error(
                "handoff_notice_not_queued",
                extra={"event": "handoff_notice_not_queued", "error": str(error)[:200]},
            )


class Conversations:
    """What the console and the HTTP API do to conversations."""

    def __init__(
        self,
        store: ConversationStore,
        records: RecordStore,
        queue: TaskQueue,
        task_for: Callable[[Record], Task | None],
        rules: ModeRules,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.records = records
        self.queue = queue
        self.task_for = task_for
        self.rules = rules
        self.clock = clock

    async def get(self, key: str) -> Conversation:
        conversation = await self.store.get_conversation(key)
        if conversation is None:
            raise ConversationMissing("no conversation with this id")
        return conversation

    async def _move(
        self, current: Conversation, to: str, reason: str, who: str, owner: str = ""
    ) -> Conversation:
        """Move `current` (as just read) to `to`, checked against the chart."""
        key = current.key
        write = ConversationWrite(
            expect_mode=current.mode,
            mode=to,
            reason=reason,
            owner=owner,
            at=self.clock(),
            agent_activity=to == HUMAN,
            audit=(who, f"{current.mode} -> {to} ({reason})"),
        )
        try:
            self.rules.check(current.mode, write)
        except IllegalTransition:
            raise ConversationRefused(
                f"the conversation is in '{current.mode}': it cannot move to '{to}'"
            ) from None
        changed = await self.store.change_conversation(key, write)
        if changed is None:
            raise ConversationRefused("the conversation changed meanwhile; try again")
        await self.rules.changed(key, current.mode, write, changed.version)
        return changed

    async def take_over(self, key: str, who: str) -> Conversation:
        """`who` owns the conversation: the bot is silent until it is released."""
        current = await self.get(key)
        if current.mode == HUMAN:
            if current.owner == who:
                return current
            raise ConversationRefused("another agent owns this conversation")
        return await self._move(current, HUMAN, "operator_takeover", who, owner=who)

    async def release(self, key: str, who: str, reason: str = "agent_release") -> Conversation:
        """The bot answers the customer again."""
        return await self._move(await self.get(key), BOT, reason, who)

    async def reply(self, key: str, who: str, text: str) -> str:
        """Queue an agent's reply to the customer (taking the conversation over first): the
        id of the record that sends it, through the same path as the bot's replies."""
        body = text.strip()
        if not body:
            raise ValueError("the reply is empty")
        if len(body) > AGENT_TEXT_LIMIT:
            raise ValueError(f"the reply is longer than {AGENT_TEXT_LIMIT} characters")
        current = await self.get(key)
        answered = await self.records.get(current.last_message) if current.last_message else None
        if answered is None:
            raise ConversationRefused(
                "the customer's messages are gone (retention): no one to answer"
            )
        if current.mode != HUMAN:
            current = await self._move(current, HUMAN, "agent_reply", who, owner=who)
        elif current.owner != who:
            raise ConversationRefused("another agent owns this conversation")
        now = self.clock()
        await self.store.change_conversation(
            key, ConversationWrite(at=now, agent_activity=True, audit=(who, "replied"))
        )
        record = agent_record(answered, key, body, now)
        await self.records.create_if_absent([record])
        task = self.task_for(record)
        if task is not None:
            await self.queue.enqueue(task)
        return record.message_id

    async def release_idle(self, idle_seconds: float, limit: int = 500) -> int:
        """Give back to the bot every conversation no agent touched for `idle_seconds`."""
        now = self.clock()
        released = 0
        for mode in ("waiting_human", HUMAN):
            for conversation in await self.store.list_conversations(mode, limit):
                if now - conversation.idle_since() < idle_seconds:
                    continue
                try:
                    # Listed without its trail; the move reads nothing it needs from it.
                    await self._move(conversation, BOT, "idle_timeout", "pyloto")
                except ConversationRefused:
                    continue  # it changed meanwhile: the next sweep looks again
                released += 1
        return released


def agent_record(answered: Record, key: str, text: str, now: float) -> Record:
    """The record of an agent's reply to the customer of `answered` (their newest message):
    addressed as that message was, in its conversation, from the number it was written to."""
    message_id = f"agent.{uuid.uuid4().hex}"
    inbound = replace(
        answered.inbound,
        message_id=message_id,
        kind=AGENT_REPLY_KIND,
        timestamp=int(now),
        text=text,
        contact_name=None,
        context_message_id=None,
        details={},
    )
    return replace(Record.received(inbound, now), conversation=key)
