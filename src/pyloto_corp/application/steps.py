"""The work done in each state: each step returns the trigger to fire and its effects."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from pyloto_corp.application.ports import (
    Outbox,
    PermanentStepError,
    StateStore,
    TransientStepError,
)
from pyloto_corp.domain.records import IGNORED_KINDS, Record
from pyloto_corp.domain.replies import template_for, text_reply_body
from pyloto_corp.domain.statechart import ANY_STATE


@dataclass
class Outcome:
    """The trigger a step fires and what it learned."""

    trigger: str
    updates: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class StepContext:
    """What steps may use: the store (for claims), the outbox and the clock.

    `instance_id` names this process in send claims; `sole_instance` says no other process
    can use the store (SQLite holds an exclusive lock), so a claim by another instance was
    left by a crashed predecessor.
    """

    store: StateStore
    outbox: Outbox
    clock: Callable[[], float]
    llm_enabled: bool = False
    instance_id: str = ""
    sole_instance: bool = False


# How long a claimed send belongs to the task that claimed it (above the Graph API timeout):
# another delivery of the task waits this long before it may reconcile and send itself.
SEND_LEASE_SECONDS = 30.0

Step = Callable[[Record, StepContext], Awaitable[Outcome]]


async def accept(record: Record, ctx: StepContext) -> Outcome:
    """Reactions, edits, deletions and system notices need no reply."""
    if record.inbound.kind in IGNORED_KINDS:
        return Outcome("ignore", {"results": {"ignored_kind": record.inbound.kind}})
    if not record.inbound.sender:
        # Kept (nothing accepted is dropped) but there is nobody to answer.
        return Outcome("ignore", {"results": {"ignored_reason": "no_sender"}})
    return Outcome("accept")


async def detect_event(record: Record, ctx: StepContext) -> Outcome:
    """LLM#1; without an LLM the record falls back with the reason."""
    return Outcome("fall_back", {"fallback_reason": "llm_disabled"})


async def draft_reply(record: Record, ctx: StepContext) -> Outcome:
    """LLM#2; without an LLM the record falls back with the reason."""
    return Outcome("fall_back", {"fallback_reason": "llm_disabled"})


async def choose_message_type(record: Record, ctx: StepContext) -> Outcome:
    """LLM#3; without an LLM the record falls back with the reason."""
    return Outcome("fall_back", {"fallback_reason": "llm_disabled"})


async def queue_reply(record: Record, ctx: StepContext) -> Outcome:
    """Build the Graph API request body: the chosen reply, or the template for the kind."""
    template, text = template_for(record.inbound)
    body = text_reply_body(record.inbound, text, callback_data=record.message_id)
    results = dict(record.results)
    results["template"] = template
    return Outcome("queue_reply", {"reply": body, "results": results})


async def send(record: Record, ctx: StepContext) -> Outcome:
    """Send the reply at most once: claim the send, reconcile an earlier one, then send."""
    assert record.reply is not None, "queued_outbound always carries a reply"
    now = ctx.clock()
    if record.send_started_at is not None:
        earlier = await ctx.outbox.find_sent(record.message_id)
        if earlier is not None:
            return Outcome("send", {"outbound_message_id": earlier})
        if _claim_alive(record, ctx, now):
            raise TransientStepError("another attempt is sending this reply")
    claimed = replace(
        record, send_started_at=now, send_claimed_by=ctx.instance_id, version=record.version + 1
    )
    if not await ctx.store.save(claimed, expected_version=record.version):
        raise ClaimLost(record.message_id)
    try:
        outbound_id = await ctx.outbox.send(record.reply)
    except (TransientStepError, PermanentStepError):
        # The outbox knows nothing was sent: release the claim so a retry may send at once.
        await ctx.store.save(
            replace(
                claimed, send_started_at=None, send_claimed_by=None, version=claimed.version + 1
            ),
            expected_version=claimed.version,
        )
        raise
    record.version = claimed.version
    record.send_started_at = claimed.send_started_at
    record.send_claimed_by = claimed.send_claimed_by
    return Outcome("send", {"outbound_message_id": outbound_id})


def _claim_alive(record: Record, ctx: StepContext, now: float) -> bool:
    """Whether an earlier claim may still be sending (so sending now could duplicate it)."""
    assert record.send_started_at is not None
    if ctx.sole_instance and record.send_claimed_by != ctx.instance_id:
        return False  # its owner was a previous process on this store: it is gone
    return now - record.send_started_at < SEND_LEASE_SECONDS


class ClaimLost(Exception):
    """Another task claimed this step first; this one has nothing left to do."""


STEPS: Mapping[str, Step] = {
    "received": accept,
    "deduped": detect_event,
    "llm1": draft_reply,
    "llm2": choose_message_type,
    "llm3": queue_reply,
    "fallback": queue_reply,
    "queued_outbound": send,
}

# The triggers each state's step can fire; the statechart is checked against this at start-up.
HANDLED_TRIGGERS: Mapping[str, frozenset[str]] = {
    "received": frozenset({"accept", "ignore"}),
    "deduped": frozenset({"detect_event", "fall_back"}),
    "llm1": frozenset({"draft_reply", "fall_back"}),
    "llm2": frozenset({"choose_message_type", "fall_back"}),
    "llm3": frozenset({"queue_reply", "fall_back"}),
    "fallback": frozenset({"queue_reply"}),
    "queued_outbound": frozenset({"send"}),
    ANY_STATE: frozenset({"dead_letter"}),
}
