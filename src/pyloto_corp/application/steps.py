"""The work done in each state: each step returns one event, which names its trigger."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import replace

from pyloto_corp.ai import limits
from pyloto_corp.application.bursts import changes_message, newest_expected
from pyloto_corp.application.handoff import ECHO_KIND, bot_guard, speaks_for_bot
from pyloto_corp.application.llm_steps import (
    CONVERSATION_TURNS,
    CONVERSATION_WINDOW_SECONDS,
    conversation_id,
    customer_key,
    fall_back,
    for_llm,
    llm_text,
)
from pyloto_corp.application.media_step import after_dedupe
from pyloto_corp.application.ports import (
    AmbiguousSend,
    PermanentStepError,
    TransientStepError,
)
from pyloto_corp.application.registry import REGISTRY, Step, handled_triggers, step
from pyloto_corp.application.step_context import LLMRouting, StepContext
from pyloto_corp.domain.conversation import AGENT_REPLY_KIND, HANDOFF_REASON, window_closes
from pyloto_corp.domain.events import (
    Accepted,
    AgentReplyQueued,
    DeadLettered,
    FellBack,
    Ignored,
    ReplyQueued,
    ReplySent,
    SendClaimed,
    SendReleased,
    SendUnknown,
)
from pyloto_corp.domain.outcome import CLAIM_ABANDONED, resend_refusal
from pyloto_corp.domain.privacy import message_ref
from pyloto_corp.domain.records import IGNORED_KINDS, Record, Turn
from pyloto_corp.domain.replies import (
    agent_reply_body,
    is_template,
    reply_body,
    template_reply_body,
    text_reply_body,
)
from pyloto_corp.domain.writes import ConversationWrite, CustomerRequest, SlotRequest, TurnsWrite

# `after_dedupe` (the step of `deduped`: the media step, else LLM#1) registers on import.
__all__ = ["HANDLED_TRIGGERS", "STEPS", "LLMRouting", "StepContext", "after_dedupe"]

log = logging.getLogger(__name__)


# How long a claimed send belongs to the task that claimed it (above the Graph API timeout):
# another delivery of the task waits this long before it may reconcile and send itself.
SEND_LEASE_SECONDS = 30.0
# The reason of a reply held outside the 24-hour window (no re-engagement template set).
WINDOW_CLOSED = (
    "window_closed: the customer wrote more than 24 hours ago and WhatsApp accepts only an"
    " approved template then; set WHATSAPP_REENGAGEMENT_TEMPLATE to send one"
)


@step("received", Accepted, Ignored, AgentReplyQueued)
async def accept(record: Record, ctx: StepContext) -> Accepted | Ignored | AgentReplyQueued:
    """Reactions, edits, deletions and system notices need no reply; nor does a message to
    a business number that is not ours (never answered, nor marked read, from another).
    An agent's reply is built at once. An accepted customer message moves the conversation's
    24-hour window (it is marked read in `deduped`, where the conversation is known)."""
    if ctx.numbers.sender_of(record.inbound.phone_number_id) is None:
        return Ignored(reason="unknown_business_number")
    if record.inbound.kind == AGENT_REPLY_KIND:
        return _agent_reply(record)
    if record.inbound.kind in IGNORED_KINDS and not (
        ctx.bursts.coalescing and changes_message(record)
    ):
        return Ignored(kind=record.inbound.kind)
    if not record.inbound.sender:
        # Kept (nothing accepted is dropped) but there is nobody to answer.
        return Ignored(reason="no_sender")
    if record.inbound.kind == ECHO_KIND:  # the business wrote it: no window, no receipt
        return Accepted(customer=_customer(record, ctx))
    window = ConversationWrite(
        customer_at=float(record.inbound.timestamp), message_id=record.message_id
    )
    return Accepted(customer=_customer(record, ctx), conversation=window)


def _agent_reply(record: Record) -> AgentReplyQueued:
    body = agent_reply_body(record.inbound, record.inbound.text or "")
    if limits.problems(body):
        raise PermanentStepError("the agent's reply breaks a WhatsApp limit")
    return AgentReplyQueued(reply=body)


def _customer(record: Record, ctx: StepContext) -> CustomerRequest:
    """What stands for the customer, resolved once for the record by the save of the accept
    (memory, pacing and the rollout read it from `Record.conversation` after this): their
    BSUID's hash whenever the webhook carried one, their number's hash as its alias."""
    inbound = record.inbound
    return CustomerRequest(
        conversation_id(inbound.phone, ctx.hash_key) if inbound.phone else None,
        conversation_id(inbound.bsuid, ctx.hash_key) if inbound.bsuid else None,
    )


def _sender(record: Record, ctx: StepContext) -> str:
    """The business number that answers `record`: the one it was written to."""
    number = ctx.numbers.sender_of(record.inbound.phone_number_id)
    if number is None:
        # Accepted while it was ours (or replayed since): never sent from another number.
        raise PermanentStepError("the business number written to is no longer configured")
    return number


@step("llm3", ReplyQueued, FellBack)
@step("fallback", ReplyQueued)
async def queue_reply(record: Record, ctx: StepContext) -> ReplyQueued | FellBack:
    """Build the Graph API request: LLM#3's message, else the template for what we know.

    Whatever built it, a request that breaks a WhatsApp limit is never queued: from `llm3`
    the record falls back to a template instead.
    """
    message = record.results.message
    if record.state == "llm3" and message is not None:
        body = reply_body(record.inbound, message)
        broken = limits.problems(body)
        if not broken:
            return ReplyQueued(reply=body)
        return fall_back(record, "llm3", "invalid_output", ", ".join(broken))
    if record.fallback_reason == HANDOFF_REASON:  # the one reply a handoff sends
        template, text = HANDOFF_REASON, ctx.handoff.acknowledgment
    else:
        template, text = ctx.templates.for_message(record.inbound, record.results.event)
    body = text_reply_body(record.inbound, text)
    if limits.problems(body):
        raise PermanentStepError("the template reply breaks a WhatsApp limit")
    return ReplyQueued(reply=body, template=template)


@step("queued_outbound", SendClaimed, DeadLettered)
async def claim_send(record: Record, ctx: StepContext) -> SendClaimed | DeadLettered:
    """Pace the customer's replies, then claim the send: the claim is saved (the move to
    `sending`) before any request leaves, and its maker sends at once. A reply that was in
    `sending` before is looked up first: a status about it means it left, and the send step
    records it (reconciling) instead of sending it again."""
    if record.send_started_at is not None:
        # Claimed while the claim was not yet a state of its own: it may have been sent.
        return SendClaimed(record.send_started_at, record.send_claimed_by or "", fresh=False)
    if _sent_before(record) and await ctx.outbox.find_sent(record.message_id) is not None:
        return SendClaimed(ctx.clock(), ctx.instance_id, fresh=False)
    return _claim(record, ctx)


def _sent_before(record: Record) -> bool:
    """Whether a send of this reply was claimed before (released, or replayed since)."""
    return any(entry.dest == "sending" for entry in record.history)


@step("sending", ReplySent, SendReleased, SendClaimed, SendUnknown, DeadLettered)
async def send(
    record: Record, ctx: StepContext
) -> ReplySent | SendReleased | SendClaimed | SendUnknown | DeadLettered:
    """Send the reply at most once. The delivery that made the claim sends. Any other
    reconciles first: a send the outbox confirms is recorded, not repeated; a claim whose
    holder may still be sending, or whose send a status webhook may still confirm (for
    `outbox.reconcile_seconds`), is waited for; after that domain/outcome.py decides: the
    send is claimed anew (saved before the request leaves again) and sent, or the record is
    dead-lettered with its outcome unknown."""
    assert record.reply is not None, "sending always carries a reply"
    if not ctx.claim_made_here:
        found = await _reconcile(record, ctx)
        if found is not None:
            return found
        return _claim(record, ctx)
    sender = _sender(record, ctx)
    try:
        outbound_id = await ctx.outbox.send(record.reply, sender)
    except AmbiguousSend as error:
        # The request may have reached WhatsApp: keep the claim, reconcile on retry.
        return SendUnknown(why=error.why, reason=str(error))
    except TransientStepError as error:
        return SendReleased(reason=str(error))  # nothing left: a retry may send at once
    return ReplySent(outbound_message_id=outbound_id, turns=_exchange(record, ctx))


def _claim(record: Record, ctx: StepContext) -> SendClaimed | DeadLettered:
    """The claim, under the customer's pacing token and, for a bot reply, the conversation
    still in `bot`. Outside WhatsApp's 24-hour window a free-form reply is never sent (Meta
    refuses it, 131047): the re-engagement template goes instead, or, with none configured,
    the record is dead-lettered `window_closed` (replayable once the customer writes)."""
    now = ctx.clock()
    guard = bot_guard(record, ctx)
    if guard is not None:  # a newer message of the customer supersedes the draft
        guard = replace(guard, expect_newest=newest_expected(record, ctx))
    slot = _slot(record, ctx, now)
    closes = window_closes_at(record, ctx)
    if closes and now >= closes and not is_template(record.reply):
        if ctx.handoff.reengagement is None:
            return DeadLettered(reason=WINDOW_CLOSED, conversation=guard)
        name, language = ctx.handoff.reengagement
        body = template_reply_body(record.inbound, name, language)
        return SendClaimed(
            now, ctx.instance_id, slot=slot, reply=body, template=name, conversation=guard
        )
    return SendClaimed(now, ctx.instance_id, slot=slot, conversation=guard)


def window_closes_at(record: Record, ctx: StepContext) -> float:
    """When the customer-service window of the record's reply closes: 24 h after the
    customer's newest message (the conversation's, or this record's own if it is a customer
    message); 0 when unknown (nothing to go by: the send is not held)."""
    newest = ctx.conversation.customer_at if ctx.conversation is not None else 0.0
    if speaks_for_bot(record) and record.inbound.kind != ECHO_KIND:
        newest = max(newest, float(record.inbound.timestamp or 0))
    return window_closes(newest)


async def _reconcile(
    record: Record, ctx: StepContext
) -> ReplySent | SendUnknown | DeadLettered | None:
    """What an earlier send of this claim came to, as far as pyloto knows: its send (a
    status named it), its outcome now noted as unknown (its holder ended without a word), a
    dead letter (domain/outcome.py forbids sending it again), or None: it may be sent anew.
    Raises TransientStepError while sending again could duplicate a send still in doubt."""
    earlier = await ctx.outbox.find_sent(record.message_id)
    if earlier is not None:
        return ReplySent(outbound_message_id=earlier)
    if record.send_started_at is None:
        return None
    now = ctx.clock()
    if _claim_alive(record, ctx, now):
        # Polled (a status webhook may confirm the send meanwhile), never dead-lettered for
        # it: the claim's lease ends within SEND_LEASE_SECONDS.
        raise TransientStepError("another attempt is sending this reply", waiting=True)
    exact = ctx.outbox.reconcile_seconds == 0  # find_sent's None proves nothing left
    if not exact and record.send_claimed_by is not None:
        # The delivery that claimed it is gone without saying how the send ended.
        return SendUnknown(CLAIM_ABANDONED, "the claim's holder ended without an answer")
    # No `retry_after` here: each retry asks `find_sent` again, so a status webhook that
    # arrives meanwhile completes the record at the next retry, not at the window's end.
    if now - record.send_started_at < ctx.outbox.reconcile_seconds:
        raise TransientStepError("waiting for a status webhook about an earlier send")
    refusal = None if exact else resend_refusal(record, ctx.outbox.reconcile_seconds)
    if refusal is None:
        return None
    log.error(
        "send_outcome_unknown",
        extra={
            "event": "send_outcome_unknown",
            "ref": message_ref(record.message_id),
            "why": record.outcome_unknown,
            "sends": record.unknown_sends,
        },
    )
    return DeadLettered(reason=refusal)


def _exchange(record: Record, ctx: StepContext) -> TurnsWrite:
    """The exchange kept for LLM#2's next prompt, written by the save of the send."""
    reply = record.reply or {}
    text = reply.get("text", {}).get("body") or reply.get("interactive", {}).get("body", {}).get(
        "text"
    )
    now = ctx.clock()
    agent = record.inbound.kind == AGENT_REPLY_KIND
    said = "" if agent else llm_text(record, mask_pii=True)
    turns = [Turn("customer", said, now)] if said.strip() else []
    if isinstance(text, str):
        # The reply an LLM wrote may repeat the customer: kept as masked as their own words.
        turns.append(Turn("agent" if agent else "business", for_llm(text, record, True), now))
    conversation = customer_key(record, ctx.hash_key)
    return TurnsWrite(conversation, turns, CONVERSATION_WINDOW_SECONDS, CONVERSATION_TURNS)


def _slot(record: Record, ctx: StepContext, now: float) -> SlotRequest | None:
    """The pacing token the claim's save needs, keeping one customer's replies under Meta's
    pair rate (no token: nothing is saved and the queue retries when one is free)."""
    if ctx.pacing is None:
        return None
    bucket = customer_key(record, ctx.hash_key)
    return SlotRequest(bucket, now, ctx.pacing.per_seconds, ctx.pacing.burst)


def _claim_alive(record: Record, ctx: StepContext, now: float) -> bool:
    """Whether an earlier claim may still be sending (so sending now could duplicate it)."""
    assert record.send_started_at is not None
    if record.send_claimed_by is None:
        return False  # its holder recorded the outcome as unknown: it sends no more
    if ctx.sole_instance and record.send_claimed_by != ctx.instance_id:
        return False  # its owner was a previous process on this store: it is gone
    return now - record.send_started_at < SEND_LEASE_SECONDS


# Every step of the statechart, by state (the decorators above and in llm_steps fill it).
STEPS: Mapping[str, Step] = {state: spec.run for state, spec in REGISTRY.items()}
HANDLED_TRIGGERS: Mapping[str, frozenset[str]] = handled_triggers()
