"""What a step found out, as typed past-tense events: each names the trigger it fires and
what it changes on the record (`Record.apply` does the rest: state, version, history)."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, ClassVar

from pyloto_corp.domain.results import LLMCall
from pyloto_corp.domain.writes import (
    NO_WRITES,
    ConversationWrite,
    CustomerRequest,
    SlotRequest,
    TurnsWrite,
    Writes,
)

if TYPE_CHECKING:
    from pyloto_corp.domain.records import Record


@dataclass(frozen=True)
class Burst:
    """The customer's messages one reply answers, oldest first: what each said (`texts`,
    as the customer wrote it), their records (`ids`) and when the first arrived (`since`)."""

    texts: tuple[str, ...]
    ids: tuple[str, ...]
    since: float


@dataclass(frozen=True)
class Event:
    """A step's outcome. `trigger` is the statechart transition it fires.

    `continues`: the next state's step runs at once in the same delivery (no task is
    queued for it). `retries`: after the transition is saved the delivery fails, so its
    queue retries the task with backoff (no task is queued either). `writes()`: what the
    transition's save writes besides the record (domain/writes.py). `conversation`: what it
    writes to the customer's conversation; any event may carry it (the mode it expects, a
    handoff). `burst`: the customer's messages the record answers (its step waited out
    their burst); `typing_at`: the step showed the typing indicator anew then.
    """

    trigger: ClassVar[str]
    continues: ClassVar[bool] = False
    retries: ClassVar[bool] = False
    conversation: ConversationWrite | None = field(default=None, kw_only=True)
    burst: Burst | None = field(default=None, kw_only=True)
    typing_at: float | None = field(default=None, kw_only=True)

    def changes(self, record: Record) -> Record:
        """`record` with this event's facts written in (before state, version, history)."""
        return record

    def applied(self, record: Record) -> Record:
        """`changes`, then what any event may note: the burst, the typing indicator."""
        changed = self.changes(record)
        results = changed.results
        if self.burst is not None:
            results = replace(
                results,
                burst_texts=list(self.burst.texts),
                burst_ids=list(self.burst.ids),
                burst_since=self.burst.since,
            )
        if self.typing_at is not None:
            results = replace(results, typing_at=self.typing_at)
        return changed if results is changed.results else replace(changed, results=results)

    def retry_reason(self) -> str:
        """Why the delivery is retried, for an event that `retries`."""
        return ""

    def writes(self) -> Writes:
        """What the save of this transition writes besides the record."""
        own = self.own_writes()
        return own if self.conversation is None else replace(own, conversation=self.conversation)

    def own_writes(self) -> Writes:
        """What this kind of event writes (the conversation write aside)."""
        return NO_WRITES


@dataclass(frozen=True)
class Accepted(Event):
    """The message needs a reply; `customer` names the keyed hashes of its number and BSUID,
    resolved to the customer's key by the save, which writes it as `Record.conversation`."""

    trigger: ClassVar[str] = "accept"
    customer: CustomerRequest | None = None

    def own_writes(self) -> Writes:
        return Writes(customer=self.customer)


@dataclass(frozen=True)
class Ignored(Event):
    """The message needs no reply: its kind (reaction, edit, ...) or why (no sender)."""

    trigger: ClassVar[str] = "ignore"
    kind: str | None = None
    reason: str | None = None

    def changes(self, record: Record) -> Record:
        results = replace(record.results, ignored_kind=self.kind, ignored_reason=self.reason)
        return replace(record, results=results)


@dataclass(frozen=True)
class MediaUnderstood(Event):
    """The media step turned a voice note into its transcript, or a picture into a
    description (`kind`: transcript | description), from `size` bytes never kept."""

    trigger: ClassVar[str] = "understand_media"
    kind: str
    text: str
    size: int
    call: LLMCall

    def changes(self, record: Record) -> Record:
        results = replace(
            record.results,
            media_kind=self.kind,
            media_text=self.text,
            media_bytes=self.size,
            media=self.call,
        )
        return replace(record, results=results)


@dataclass(frozen=True)
class EventDetected(Event):
    """LLM#1 classified the customer's intent."""

    trigger: ClassVar[str] = "detect_event"
    event: str
    confidence: float
    summary: str  # already free of personal data
    call: LLMCall

    def changes(self, record: Record) -> Record:
        results = replace(
            record.results,
            event=self.event,
            confidence=self.confidence,
            summary=self.summary,
            llm1=self.call,
        )
        return replace(record, results=results)


@dataclass(frozen=True)
class ReplyDrafted(Event):
    """LLM#2 wrote the reply's text."""

    trigger: ClassVar[str] = "draft_reply"
    draft: str
    call: LLMCall

    def changes(self, record: Record) -> Record:
        return replace(record, results=replace(record.results, draft=self.draft, llm2=self.call))


@dataclass(frozen=True)
class MessageTypeChosen(Event):
    """LLM#3 chose the WhatsApp message, repaired to WhatsApp's limits."""

    trigger: ClassVar[str] = "choose_message_type"
    # The Graph API message object (text or interactive): its shape is WhatsApp's.
    message: dict[str, Any]
    message_type: str
    repairs: tuple[str, ...]
    downgraded_from: str | None
    call: LLMCall

    def changes(self, record: Record) -> Record:
        results = replace(
            record.results,
            message=self.message,
            message_type=self.message_type,
            repairs=list(self.repairs),
            downgraded_from=self.downgraded_from,
            llm3=self.call,
        )
        return replace(record, results=results)


@dataclass(frozen=True)
class FellBack(Event):
    """An LLM step gave up (or was never to run): a template answers, for `reason`."""

    trigger: ClassVar[str] = "fall_back"
    step: str
    reason: str
    # The call that failed, when one was made (its outcome is counted by the console).
    call: LLMCall | None = None

    def changes(self, record: Record) -> Record:
        results = replace(record.results, fallback_step=self.step, failed_call=self.call)
        return replace(record, fallback_reason=self.reason, results=results)


@dataclass(frozen=True)
class ReplyQueued(Event):
    """The Graph API request is built and checked; `template` names it if it is one."""

    trigger: ClassVar[str] = "queue_reply"
    # The Graph API request body, as it will be sent: its shape is WhatsApp's.
    reply: dict[str, Any]
    template: str | None = None

    def changes(self, record: Record) -> Record:
        results = record.results
        if self.template is not None:
            results = replace(results, template=self.template)
        return replace(record, reply=self.reply, results=results)


@dataclass(frozen=True)
class SendClaimed(Event):
    """The send is claimed: saved before any request leaves, so whoever finds the record in
    `sending` later knows a request may be out. `fresh` is False for a claim carried over
    from before (it must be reconciled, not trusted to be unsent)."""

    trigger: ClassVar[str] = "claim_send"
    continues: ClassVar[bool] = True
    at: float
    by: str
    fresh: bool = True
    # The customer's pacing token: no token, no claim saved (the queue retries later).
    slot: SlotRequest | None = None
    # The reply sent instead (the re-engagement template, outside the 24-hour window), and
    # its name; the reply built before is kept as `Results.window_replaced`.
    reply: dict[str, Any] | None = None
    template: str | None = None

    def changes(self, record: Record) -> Record:
        claimed = replace(record, send_started_at=self.at, send_claimed_by=self.by)
        if self.reply is None:
            return claimed
        results = replace(record.results, template=self.template, window_replaced=record.reply)
        return replace(claimed, reply=self.reply, results=results)

    def own_writes(self) -> Writes:
        return Writes(slot=self.slot)


@dataclass(frozen=True)
class SendReleased(Event):
    """The outbox refused the request before it left (nothing was sent): the claim goes,
    and the send is retried by the queue, with backoff, from `queued_outbound`."""

    trigger: ClassVar[str] = "release_send"
    retries: ClassVar[bool] = True
    reason: str

    def changes(self, record: Record) -> Record:
        return replace(record, send_started_at=None, send_claimed_by=None)

    def retry_reason(self) -> str:
        return self.reason


@dataclass(frozen=True)
class SendUnknown(Event):
    """The send may have reached WhatsApp and no answer says what became of it (`why`, one
    of domain/outcome.py's reasons): the claim stays, its holder lets go of it, and the
    queue retries the task, which asks for a status about the reply before anything else.
    The record notes the outcome unknown since the claim of its first such send."""

    trigger: ClassVar[str] = "send_unknown"
    retries: ClassVar[bool] = True
    why: str
    reason: str

    def changes(self, record: Record) -> Record:
        since = record.outcome_unknown_since or record.send_started_at
        return replace(
            record,
            send_claimed_by=None,
            outcome_unknown_since=since,
            outcome_unknown=self.why,
            unknown_sends=record.unknown_sends + 1,
        )

    def retry_reason(self) -> str:
        return self.reason


@dataclass(frozen=True)
class ReplySent(Event):
    """WhatsApp (or the dry-run outbox) accepted the reply under `outbound_message_id`
    (a status about it settles an unknown outcome too)."""

    trigger: ClassVar[str] = "send"
    outbound_message_id: str
    # The exchange kept for LLM#2's next prompt (None: nothing to keep, as on a reconcile).
    turns: TurnsWrite | None = None

    def own_writes(self) -> Writes:
        return Writes(turns=self.turns)

    def changes(self, record: Record) -> Record:
        return replace(
            record,
            outbound_message_id=self.outbound_message_id,
            outcome_unknown_since=None,
            outcome_unknown=None,
        )


@dataclass(frozen=True)
class Collected(Event):
    """The message waits out the customer's burst (application/bursts.py): its step runs
    again at `wake_at`, when the quiet window after it has passed (or the cap after the
    burst's first message, `since`)."""

    trigger: ClassVar[str] = "collect"
    wake_at: float
    since: float  # when the burst's first unanswered message arrived

    def changes(self, record: Record) -> Record:
        results = replace(record.results, wake_at=self.wake_at, burst_since=self.since)
        return replace(record, results=results)


@dataclass(frozen=True)
class Merged(Event):
    """The message gets no reply of its own (`reason`): a newer message of the same
    customer answers it with the rest of their burst, or cancelled it (a deletion); a draft
    made for it is superseded, never sent."""

    trigger: ClassVar[str] = "merge"
    reason: str

    def changes(self, record: Record) -> Record:
        return replace(record, results=replace(record.results, merged_reason=self.reason))


@dataclass(frozen=True)
class HeldForAgent(Event):
    """A person was asked for or owns the customer's conversation (`mode`): the bot says
    nothing (no LLM call, no typing indicator, no reply); the customer's words are kept for
    the agents and, as a turn, for LLM#2 once the bot answers again (`turns`)."""

    trigger: ClassVar[str] = "hold_for_agent"
    mode: str
    turns: TurnsWrite | None = None

    def changes(self, record: Record) -> Record:
        return replace(record, results=replace(record.results, held_mode=self.mode))

    def own_writes(self) -> Writes:
        return Writes(turns=self.turns)


@dataclass(frozen=True)
class AgentReplyQueued(Event):
    """An agent's reply (a record pyloto made for it) is built: it goes out through the
    same send path as the bot's (pacing, send claim, reconciling, dead letter, replay)."""

    trigger: ClassVar[str] = "queue_agent_reply"
    reply: dict[str, Any]

    def changes(self, record: Record) -> Record:
        return replace(record, reply=self.reply)


@dataclass(frozen=True)
class DeadLettered(Event):
    """Out of attempts or a permanent error: the record waits for an operator."""

    trigger: ClassVar[str] = "dead_letter"
    reason: str

    def changes(self, record: Record) -> Record:
        return replace(record, failure_reason=self.reason)


@dataclass(frozen=True)
class ReplayedToSend(Event):
    """An operator re-drove a dead letter that has its reply: back to the send. The failure
    is kept as `previous_failure`; the send claim is cleared."""

    trigger: ClassVar[str] = "replay_send"

    def changes(self, record: Record) -> Record:
        results = replace(record.results, previous_failure=record.failure_reason)
        return replace(
            record, results=results, failure_reason=None, send_started_at=None, send_claimed_by=None
        )


@dataclass(frozen=True)
class ReplayedToReply(ReplayedToSend):
    """An operator re-drove a dead letter without a reply: a template is built for it."""

    trigger: ClassVar[str] = "replay_reply"

    def changes(self, record: Record) -> Record:
        replayed = super().changes(record)
        return replace(replayed, fallback_reason=record.fallback_reason or "replayed")
