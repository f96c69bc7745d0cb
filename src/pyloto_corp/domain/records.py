"""The persisted record of one inbound message and the facts it is built from."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from pyloto_corp.domain.identity import is_bsuid
from pyloto_corp.domain.results import Results

if TYPE_CHECKING:
    from pyloto_corp.domain.events import Event

# Kinds of inbound message that need no reply: they end in `ignored`.
IGNORED_KINDS = frozenset({"reaction", "edit", "revoke", "deleted", "system", "ephemeral"})

# The dead-letter state: operators replay records found in it (`pyloto replay`).
FAILED_STATE = "failed"

# Delivery statuses only move forward; `failed` outranks everything it can follow.
DELIVERY_RANK = {"sent": 1, "delivered": 2, "read": 3, "played": 4, "failed": 5}


@dataclass(frozen=True)
class InboundMessage:
    """A WhatsApp message normalised from the webhook payload.

    `sender` is who wrote, as the message names them: the phone number (`from`) when
    WhatsApp may show it, else their BSUID (records saved before BSUIDs were kept hold only
    this). `user_id` is the BSUID (`from_user_id`, else the contact's `user_id`),
    `parent_user_id` the parent BSUID and `username` the WhatsApp username, where given:
    personal data all, kept out of the repr like the sender's number is kept out of logs.
    """

    message_id: str
    sender: str
    kind: str
    timestamp: int
    phone_number_id: str = ""
    text: str | None = None
    contact_name: str | None = None
    context_message_id: str | None = None
    # The type's own WhatsApp object (media ids, location, order items...): Meta's shape, kept
    # as received for the reply templates and the LLM.
    details: dict[str, Any] = field(default_factory=dict)
    user_id: str | None = field(default=None, repr=False)
    parent_user_id: str | None = field(default=None, repr=False)
    username: str | None = field(default=None, repr=False)

    @property
    def phone(self) -> str | None:
        """The customer's phone number (WhatsApp id), when the webhook showed it."""
        return self.sender if self.sender and not is_bsuid(self.sender) else None

    @property
    def names(self) -> tuple[str, ...]:
        """What names the customer in free text: their profile name and their username."""
        return tuple(name for name in (self.contact_name, self.username) if name)

    @property
    def bsuid(self) -> str | None:
        """The customer's business-scoped user id, when the webhook carried one."""
        return self.user_id or (self.sender if is_bsuid(self.sender) else None)


@dataclass(frozen=True)
class UserIdChange:
    """A customer's BSUID changed (WhatsApp's `user_changed_user_id` system message or a
    `user_id_update` webhook): their state moves from `previous` to `current`."""

    previous: str = field(repr=False)
    current: str = field(repr=False)


@dataclass(frozen=True)
class Pricing:
    """What a status webhook says a sent message costs (`statuses[].pricing`): whether it is
    billable, its pricing category (service, utility, marketing, authentication, ...) and
    the pricing model (PMP: per message; CBP: the conversation-based model before it)."""

    billable: bool
    category: str
    model: str = ""


@dataclass(frozen=True)
class StatusUpdate:
    """A delivery status webhook about a message we sent."""

    outbound_message_id: str
    status: str
    timestamp: int
    callback_data: str | None = None
    errors: list[dict[str, Any]] = field(default_factory=list)  # Meta's error objects, as sent
    # The recipient's BSUID (`recipient_user_id`): personal data, never logged.
    recipient_user_id: str | None = field(default=None, repr=False)
    # Meta's price of the message (None when the status carried none, or an unreadable one).
    pricing: Pricing | None = None

    @property
    def rank(self) -> int:
        """Order of this status in the delivery lifecycle (0 = unknown)."""
        return DELIVERY_RANK.get(self.status, 0)


@dataclass
class ParsedWebhook:
    """What one webhook POST carried, read at the edge (adapters/whatsapp_webhook.py)."""

    messages: list[InboundMessage] = field(default_factory=list)
    statuses: list[StatusUpdate] = field(default_factory=list)
    # Meta's error objects (`value.errors[]`), as Meta shapes them: only logged, by code.
    errors: list[dict[str, Any]] = field(default_factory=list)
    # Customers whose BSUID changed: their memory follows them (see Ingestor.ingest).
    user_id_changes: list[UserIdChange] = field(default_factory=list)
    skipped: int = 0


@dataclass(frozen=True)
class Turn:
    """One message of a conversation as later LLM prompts see it (personal data masked)."""

    role: str  # "customer" | "business"
    text: str
    at: float = 0.0


@dataclass
class HistoryEntry:
    """One completed transition."""

    source: str
    dest: str
    trigger: str
    at: float
    duration_ms: float
    attempt: int


@dataclass
class Record:
    """The state machine of one inbound message, keyed by its wamid."""

    message_id: str
    inbound: InboundMessage
    state: str
    created_at: float
    updated_at: float
    version: int = 0
    results: Results = field(default_factory=Results)
    # The Graph API request body as it is sent: WhatsApp's shape, not ours.
    reply: dict[str, Any] | None = None
    fallback_reason: str | None = None
    failure_reason: str | None = None
    outbound_message_id: str | None = None
    send_started_at: float | None = None
    # Who holds the send claim; cleared when the holder records that its send's outcome is
    # unknown (nobody is sending then, so a retry need not wait out the claim's lease).
    send_claimed_by: str | None = None
    # A send that may have reached WhatsApp without an answer saying so (domain/outcome.py):
    # since when (the first such send's claim), why (the latest), and how many such sends.
    outcome_unknown_since: float | None = None
    outcome_unknown: str | None = None
    unknown_sends: int = 0
    attempts: dict[str, int] = field(default_factory=dict)
    history: list[HistoryEntry] = field(default_factory=list)
    trace_context: dict[str, str] = field(default_factory=dict)
    # Keyed hash standing for the customer (their conversation memory and pacing bucket), set
    # once the message is accepted: the store reads the conversation along with the record.
    conversation: str = ""
    delivery_status: str | None = None
    delivery_errors: list[dict[str, Any]] = field(default_factory=list)  # Meta's, as sent
    # The outbound id the delivery status is about (found by outbound id or callback data).
    delivery_outbound_id: str | None = None

    @classmethod
    def received(cls, inbound: InboundMessage, now: float) -> Record:
        """A new record for a message seen for the first time."""
        return cls(
            message_id=inbound.message_id,
            inbound=inbound,
            state="received",
            created_at=now,
            updated_at=now,
        )

    def apply(self, event: Event, dest: str, at: float, duration_ms: float, attempt: int) -> Record:
        """The record after `event` moved it to `dest` (the statechart's answer for the
        event's trigger): its facts written in, one history entry, the next version, and the
        highest attempt seen in the state it left."""
        entry = HistoryEntry(
            source=self.state,
            dest=dest,
            trigger=event.trigger,
            at=at,
            duration_ms=duration_ms,
            attempt=attempt,
        )
        attempts = dict(self.attempts)
        attempts[self.state] = max(attempt, attempts.get(self.state, 0))
        return replace(
            event.applied(self),
            state=dest,
            version=self.version + 1,
            updated_at=at,
            history=[*self.history, entry],
            attempts=attempts,
        )
