"""One answer per burst: a customer who writes "oi" / "quero saber o preço" / "do corte
masculino", seconds apart, gets one reply, made from all three.

With coalescing on (`BURST_QUIET_SECONDS` > 0) every customer message waits in `buffered`
until the quiet window after it has passed (a task scheduled for that time). By then a
newer message of the same customer makes it `merged`: only the newest goes on, to LLM#1
and LLM#2 with every unanswered message of the customer (the conversation's last records,
read once), media transcripts included. A message written while a reply is drafted
supersedes that draft too (the gate, before each step, and the send claim, atomically,
check that the record is still the customer's newest message), so the newer one answers
both. `BURST_MAX_WAIT_SECONDS` bounds a customer who never stops: once the burst's first
unanswered message is that old, the newest is answered when it wakes and its draft is no
longer superseded, so a continuous stream gets one reply per window.

Edits and deletions (coexistence numbers) are messages of the burst too: an edit of a
message not answered yet replaces its text; a deletion removes it (and a burst left with
nothing to answer ends without a reply). After the reply went out, both are noted on the
conversation and nothing is sent.

Each conversation runs at most `LLM_MAX_PIPELINES_PER_MINUTE` LLM pipelines a minute; a
burst beyond it is answered by its template (fallback `llm_budget`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace

from pyloto_corp.application.handoff import ECHO_KIND, mark_read, speaks_for_bot
from pyloto_corp.application.llm_steps import (
    customer_key,
    detect_event,
    fall_back,
    own_text,
)
from pyloto_corp.application.ports import StepDeferred
from pyloto_corp.application.registry import BUFFERED, SUPERSEDED_STATES, step
from pyloto_corp.application.step_context import StepContext
from pyloto_corp.domain.conversation import AGENT_REPLY_KIND, HANDOFF_REASON
from pyloto_corp.domain.events import (
    Burst,
    Collected,
    EventDetected,
    FellBack,
    Ignored,
    Merged,
    ReplayedToReply,
    ReplayedToSend,
)
from pyloto_corp.domain.privacy import message_ref
from pyloto_corp.domain.records import Record
from pyloto_corp.domain.writes import ConversationWrite

log = logging.getLogger(__name__)

# The kinds that change an earlier message (coexistence numbers): their `details` name it.
# https://developers.facebook.com/documentation/business-messaging/whatsapp/webhooks/reference/messages/edit
# (an edit within 15 minutes of the message) and .../messages/revoke (a deletion within two
# days); Meta's page of June 2026 notes edits arrive as `unsupported` for now.
EDIT, REVOKE = "edit", "revoke"
CHANGE_KINDS = frozenset({EDIT, REVOKE})
ORIGINAL = "original_message_id"

# How many of the conversation's last records a burst is gathered from.
LOOKBACK = 20
# How often a message polls for an earlier one of its burst still being read (a voice note
# being transcribed) or a reply still being drafted that the cap lets through.
POLL_SECONDS = 0.5
# WhatsApp dismisses the typing indicator after 25 s (or when the reply arrives): shown
# again once this long has passed while the reply is made.
# https://developers.facebook.com/docs/whatsapp/cloud-api/typing-indicators
TYPING_REFRESH_SECONDS = 20.0
# LLM pipelines are counted over this window for the per-conversation budget.
BUDGET_WINDOW_SECONDS = 60.0
BUDGET_REASON = "llm_budget"

MERGED_NEWER = "burst: a newer message of the customer answers this one with the rest"
SUPERSEDED = (
    "superseded: the customer wrote again while the reply was drafted; the newer message"
    " answers both"
)
REVOKED = "revoked: the customer deleted the message before its reply; nothing is sent"
AFTER_REPLY = "after_reply"

# States of a record whose reply is out, or on its way, or that is with a person: a burst
# never reaches back past one.
_ANSWERED = frozenset({"sending", "sent", "failed", "with_agent"})
# States of an earlier message still being read: the burst waits for its text.
_READING = frozenset({"received", "deduped", "media"})
# States of an earlier message whose reply is being drafted.
_DRAFTING = frozenset({"llm1", "llm2", "llm3", "fallback", "queued_outbound"})


def changes_message(record: Record) -> bool:
    """Whether `record` edits or deletes an earlier message it names."""
    return record.inbound.kind in CHANGE_KINDS and bool(record.inbound.details.get(ORIGINAL))


def reads_records(state: str, ctx: StepContext) -> bool:
    """Whether the step of `state` reads the conversation's last records (loaded with the
    record, in the same call to the store): the burst's, or the LLM budget's."""
    if state == BUFFERED:
        return True
    budgeted = ctx.llm is not None and ctx.bursts.llm_per_minute > 0
    return state in ("deduped", "media") and (budgeted or ctx.bursts.coalescing)


async def _records(record: Record, ctx: StepContext) -> list[Record]:
    if ctx.records is not None:
        return ctx.records
    return await ctx.store.conversation_records(customer_key(record, ctx.hash_key), LOOKBACK)


async def collect(record: Record, ctx: StepContext) -> Collected | None:
    """The wait for the rest of the burst, with coalescing on (None: off): the quiet window
    after this message, or less when the burst's first unanswered message reaches the cap
    sooner."""
    if not ctx.bursts.coalescing:
        return None
    since = _since(gather(await _records(record, ctx), record))
    quiet = record.created_at + ctx.bursts.quiet_seconds
    return Collected(wake_at=min(quiet, since + ctx.bursts.max_wait_seconds), since=since)


def _since(burst: _Gathered) -> float:
    """When the burst's first message arrived: each message keeps the start its own wait
    saw, so a burst longer than the records read still knows it."""
    return min(member.results.burst_since or member.created_at for member in burst.members)


async def begin(record: Record, ctx: StepContext) -> Collected | EventDetected | FellBack:
    """What follows once the message is read: the burst's wait, or LLM#1 at once (within
    the conversation's LLM budget)."""
    collected = await collect(record, ctx)
    if collected is not None:
        return collected
    budgeted = ctx.llm is not None and ctx.bursts.llm_per_minute > 0
    if budgeted and _over_budget(await _records(record, ctx), ctx):
        return _budget_fallback(record, ctx)
    return await detect_event(record, ctx)


@step("media", Collected, EventDetected, FellBack)
async def after_media(record: Record, ctx: StepContext) -> Collected | EventDetected | FellBack:
    """The voice note was transcribed (or the picture described): the burst's wait, or
    LLM#1."""
    return await begin(record, ctx)


def superseded(record: Record, ctx: StepContext) -> Merged | None:
    """The gate's check, from `buffered` on: a newer message of the same customer answers
    this one (while waiting), or supersedes its draft (while the burst is younger than the
    cap). None: the record goes on."""
    if not ctx.bursts.coalescing or record.state not in SUPERSEDED_STATES:
        return None
    if not speaks_for_bot(record) or record.inbound.kind == ECHO_KIND or replayed(record):
        return None
    newest = ctx.conversation.last_message if ctx.conversation is not None else ""
    if not newest or newest == record.message_id:
        return None
    if record.state == BUFFERED:
        return Merged(MERGED_NEWER)
    if _capped(record, ctx, ctx.clock()):
        return None  # the cap: this draft is sent; the newer message waits for it
    return Merged(SUPERSEDED)


def newest_expected(record: Record, ctx: StepContext) -> str:
    """What a bot reply's send claim expects the customer's newest message to be (the
    record itself: a newer one supersedes the draft), or '' (anything: coalescing off, or
    the burst has reached the cap)."""
    if not ctx.bursts.coalescing or record.inbound.kind in (AGENT_REPLY_KIND, ECHO_KIND):
        return ""
    if replayed(record) or _capped(record, ctx, ctx.clock()):
        return ""
    return record.message_id


def replayed(record: Record) -> bool:
    """An operator replayed this record from `failed`. A failed message closes its burst (a
    newer message's reply was made without it), so its replayed reply answers it alone and
    no newer message supersedes it."""
    return any(entry.trigger in _REPLAY_TRIGGERS for entry in record.history)


_REPLAY_TRIGGERS = frozenset({ReplayedToSend.trigger, ReplayedToReply.trigger})


def _capped(record: Record, ctx: StepContext, now: float) -> bool:
    since = record.results.burst_since or record.created_at
    return now - since >= ctx.bursts.max_wait_seconds


@dataclass
class _Gathered:
    """The customer's unanswered messages up to the record, oldest first (the record
    last), and whether an earlier one is still being read or drafted."""

    members: list[Record] = field(default_factory=list)
    reading: bool = False
    drafting: bool = False


def gather(records: list[Record], record: Record) -> _Gathered:
    """The burst `record` answers (the customer's latest message, or one that may become
    it), from the conversation's last records (oldest first): every message since the last
    one answered (sent, being sent, failed, with a person, or the reply of an agent or of
    the business app), ignored ones aside, whatever order they arrived in."""
    found = _Gathered()
    others = [r for r in records if r.message_id != record.message_id]
    for other in reversed(others):
        if other.inbound.kind in (AGENT_REPLY_KIND, ECHO_KIND) or other.state in _ANSWERED:
            break
        if other.fallback_reason == HANDOFF_REASON:
            break  # the handoff's acknowledgment answered it
        if other.state == "ignored":
            continue
        found.reading = found.reading or other.state in _READING
        found.drafting = found.drafting or other.state in _DRAFTING
        found.members.append(other)
    found.members.reverse()
    found.members.append(record)
    return found


def burst_texts(members: list[Record]) -> list[tuple[str, str]]:
    """(record id, what it said) for each message a reply answers, oldest first: an edit's
    text in place of the message it edits, nothing for a deleted message or a deletion, and
    nothing for an edit or deletion of a message outside the burst (answered already). The
    last member (the record answering) is kept even when it has no text (a sticker, a
    welcome request: its kind's template answers it)."""
    answering = members[-1]
    edits: dict[str, Record] = {}
    revoked: set[str] = set()
    for member in members:
        if changes_message(member):
            original = str(member.inbound.details[ORIGINAL])
            if member.inbound.kind == REVOKE:
                revoked.add(original)
            else:
                edits[original] = member
    said: list[tuple[str, str]] = []
    for member in members:
        if member.message_id in revoked or member.inbound.kind in CHANGE_KINDS:
            continue
        edit = edits.get(member.message_id)
        if edit is not None:
            inbound = replace(member.inbound, text=edit.inbound.text)
            member = replace(member, inbound=inbound)
        text = own_text(member)
        if text.strip() or member.message_id == answering.message_id:
            said.append((member.message_id, text))
    return said


@step(BUFFERED, EventDetected, FellBack, Merged, Ignored)
async def answer_burst(
    record: Record, ctx: StepContext
) -> EventDetected | FellBack | Merged | Ignored:
    """The newest message of the burst, once the quiet window after it has passed (or the
    cap after the burst's first message): LLM#1 with every unanswered message of the
    customer. Earlier ones still being read (a voice note) are waited for, as is a reply
    the cap lets through; a burst with nothing left to answer ends here."""
    now = ctx.clock()
    records = await _records(record, ctx)
    burst = gather(records, record)
    since = _since(burst)
    wake = min(record.created_at + ctx.bursts.quiet_seconds, since + ctx.bursts.max_wait_seconds)
    if now < wake:
        raise StepDeferred(wake, "the customer's burst is still open")
    if burst.reading:
        raise StepDeferred(now + POLL_SECONDS, "an earlier message of the burst is being read")
    if burst.drafting and now - since >= ctx.bursts.max_wait_seconds:
        # Past the cap that draft is sent; this message waits for it and answers the rest.
        raise StepDeferred(now + POLL_SECONDS, "an earlier reply of the burst is being sent")
    said = burst_texts(burst.members)
    if not said:
        return _nothing_to_answer(record, ctx, now, burst.members)
    note = Burst(tuple(text for _, text in said), tuple(i for i, _ in said), since)
    log.info(
        "burst_answered",
        extra={
            "event": "burst_answered",
            "ref": message_ref(record.message_id),
            "messages": len(said),
            "waited_ms": round((now - since) * 1000, 1),
        },
    )
    if ctx.llm is not None and ctx.bursts.llm_per_minute > 0 and _over_budget(records, ctx):
        return replace(_budget_fallback(record, ctx), burst=note)
    with_burst = replace(record, results=replace(record.results, burst_texts=list(note.texts)))
    event = await detect_event(with_burst, ctx)
    return replace(event, burst=note)


def _nothing_to_answer(
    record: Record, ctx: StepContext, now: float, members: list[Record]
) -> Merged | Ignored:
    """The burst ends without a reply: what it said was deleted, or it only edits or
    deletes messages answered already (noted on the conversation)."""
    ids = {member.message_id for member in members}
    late = {
        member.inbound.kind
        for member in members
        if changes_message(member) and member.inbound.details[ORIGINAL] not in ids
    }
    original = record.inbound.details.get(ORIGINAL)
    if changes_message(record) and original not in ids:
        action = "edited and deleted messages"
        if late == {EDIT}:
            action = "edited a message"
        elif late == {REVOKE}:
            action = "deleted a message"
        note = ConversationWrite(
            key=customer_key(record, ctx.hash_key),
            at=now,
            audit=("customer", f"{action} after its reply: nothing is sent"),
        )
        return Ignored(kind=record.inbound.kind, reason=AFTER_REPLY, conversation=note)
    return Merged(REVOKED)


def _over_budget(records: list[Record], ctx: StepContext) -> bool:
    """Whether the conversation ran its LLM pipelines for this minute (LLM#1 answered)."""
    since = ctx.clock() - BUDGET_WINDOW_SECONDS
    ran = sum(
        1
        for record in records
        if any(entry.trigger == "detect_event" and entry.at >= since for entry in record.history)
    )
    return ran >= ctx.bursts.llm_per_minute


def _budget_fallback(record: Record, ctx: StepContext) -> FellBack:
    detail = f"{ctx.bursts.llm_per_minute} LLM pipelines a minute for this conversation"
    return fall_back(record, "llm1", BUDGET_REASON, detail)


async def keep_typing(record: Record, ctx: StepContext) -> float | None:
    """Show the typing indicator again when it was shown `TYPING_REFRESH_SECONDS` ago for
    the message whose reply is being made (WhatsApp drops it after 25 s); when it was
    shown, or None. Only for a bot reply in a conversation with the bot (the gate ran)."""
    if not ctx.bursts.typing or not speaks_for_bot(record):
        return None
    if record.inbound.kind == ECHO_KIND:
        return None
    now = ctx.clock()
    first = next((e.at for e in record.history if e.dest == "deduped"), record.created_at)
    last = max(first, record.results.typing_at or 0.0, ctx.bursts.shown.get(record.message_id, 0.0))
    if now - last < TYPING_REFRESH_SECONDS:
        return None
    await mark_read(record, ctx)
    shown = ctx.bursts.shown
    shown[record.message_id] = now
    if len(shown) > 10_000:  # forget the oldest: the stored `typing_at` still holds
        for stale in sorted(shown, key=shown.__getitem__)[:5_000]:
            del shown[stale]
    return now
