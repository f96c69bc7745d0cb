"""Replay of dead letters: an operator re-drives `failed` records through the outbound step.

A record that has its reply goes back to `queued_outbound` (`replay_send`); one that failed
before a reply was built goes to `fallback` (`replay_reply`), where a template is built. A
reply the outbox already knows was sent is never sent again: that record is skipped. A reply
whose send's outcome is unknown (domain/outcome.py) may already have reached the customer: it
is replayed only when the operator confirms it (`confirm_unknown`), and never after a second
send of it ended unknown too.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from typing import Any

from pyloto_corp.application.advance import Advancer
from pyloto_corp.application.handoff import speaks_for_bot
from pyloto_corp.application.ports import ConversationStore
from pyloto_corp.application.steps import window_closes_at
from pyloto_corp.domain.events import ReplayedToReply, ReplayedToSend
from pyloto_corp.domain.outcome import replay_refusal
from pyloto_corp.domain.privacy import message_ref
from pyloto_corp.domain.records import FAILED_STATE, Record
from pyloto_corp.domain.replies import is_template

log = logging.getLogger(__name__)

# Triggers only this use case fires (`manual: true` in the statechart).
MANUAL_TRIGGERS = frozenset({ReplayedToSend.trigger, ReplayedToReply.trigger})

# Records one `replay_failed` call re-drives at most (run it again for the rest).
REPLAY_BATCH = 500


@dataclass
class ReplaySummary:
    """What a replay did: the ids re-driven, and the reason each other one was left alone."""

    replayed: list[str] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:  # the JSON answer of POST /internal/replay
        """The summary as the HTTP route answers it."""
        return {"replayed": list(self.replayed), "skipped": dict(self.skipped)}


class Replayer:
    """Re-drives dead-lettered records through the Advancer's machine and queue."""

    def __init__(self, advancer: Advancer, conversations: ConversationStore | None = None) -> None:
        """`conversations`: where the records' conversations are read (a bot reply is not
        replayed while a person is asked for or owns the conversation)."""
        self.advancer = advancer
        self.conversations = conversations

    async def replay(
        self,
        message_id: str,
        summary: ReplaySummary | None = None,
        confirm_unknown: bool = False,
    ) -> ReplaySummary:
        """Replay one record: skipped (with the reason) unless it is `failed` and unsent,
        and, when its send's outcome is unknown, unless `confirm_unknown`."""
        summary = summary if summary is not None else ReplaySummary()
        reason = await self._replay(message_id, confirm_unknown)
        if reason is None:
            summary.replayed.append(message_id)
        else:
            summary.skipped[message_id] = reason
        return summary

    async def replay_failed(self, since: float | None, limit: int = REPLAY_BATCH) -> ReplaySummary:
        """Replay every `failed` record last updated at or after `since` (all if None);
        those whose send's outcome is unknown are left for a confirmed replay of their own."""
        summary = ReplaySummary()
        for message_id in await self.advancer.store.failed_records(since, limit):
            await self.replay(message_id, summary)
        return summary

    async def _replay(self, message_id: str, confirm_unknown: bool = False) -> str | None:
        """None when replayed, else why not."""
        record = await self.advancer.store.get(message_id)
        if record is None:
            return "no such record"
        if record.state != FAILED_STATE:
            return f"state is {record.state}"
        refusal = await self._conversation_refusal(record)
        if refusal is not None:
            return refusal
        if record.reply is not None:
            if record.outbound_message_id is not None:
                return "already sent"
            outbox = self.advancer.context.outbox
            if await outbox.find_sent(record.message_id) is not None:
                return "already sent"
            # An exact outbox has just said nothing was sent: nothing is unknown.
            refusal = replay_refusal(record, confirm_unknown or outbox.reconcile_seconds == 0)
            if refusal is not None:
                return refusal
            event: ReplayedToSend = ReplayedToSend()
        else:
            event = ReplayedToReply()
        dest = await self.advancer.fire_manual(record, event, generation=f"replay-{record.version}")
        if dest == "stale":
            return "changed while replaying"
        log.warning(
            "record_replayed",
            extra={
                "event": "record_replayed",
                "ref": message_ref(message_id),
                "trigger": event.trigger,
                "dest": dest,
                "outcome_unknown": record.outcome_unknown_since is not None,
            },
        )
        return None

    async def _conversation_refusal(self, record: Record) -> str | None:
        """Why the conversation forbids replaying `record` now: a bot reply while a person
        is asked for or owns it, or a free-form reply outside the 24-hour window with no
        re-engagement template to send instead."""
        if self.conversations is None or not record.conversation:
            return None
        conversation = await self.conversations.get_conversation(record.conversation)
        if conversation is not None and conversation.silenced and speaks_for_bot(record):
            return (
                f"the conversation is {conversation.mode}: a person answers it, so the bot's "
                "reply is not replayed"
            )
        context = replace(self.advancer.context, conversation=conversation)
        closes = window_closes_at(record, context)
        closed = bool(closes) and self.advancer.context.clock() >= closes
        if closed and context.handoff.reengagement is None and not is_template(record.reply):
            return "window_closed: the customer wrote more than 24 hours ago"
        return None
