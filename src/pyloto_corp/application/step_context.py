"""What a step receives: its context."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from pyloto_corp.application.ports import Assistant, MediaSource, Outbox, StepStore
from pyloto_corp.domain.conversation import (
    DEFAULT_ACKNOWLEDGMENT,
    NO_KEYWORDS,
    Conversation,
    Keywords,
)
from pyloto_corp.domain.records import Record, Turn
from pyloto_corp.domain.replies import ReplyTemplates


@dataclass(frozen=True)
class LLMRouting:
    """How the LLM steps run: the assistant, the rollout and what leaves the process."""

    assistant: Assistant
    rollout_percent: int = 100
    mask_pii: bool = True
    allowed_hosts: frozenset[str] = frozenset()


@dataclass(frozen=True)
class BusinessNumbers:
    """The business numbers (phone number ids) this service answers for.

    A Meta app receives the webhooks of every number it is subscribed for; each message is
    read-receipted and answered from the number it was written to, never from another.
    `default` answers a message that names no number (older records, `pyloto simulate`).
    With no number configured (a dry run without WHATSAPP_PHONE_NUMBER_ID) any is answered.
    """

    default: str = ""
    others: frozenset[str] = frozenset()

    def sender_of(self, phone_number_id: str) -> str | None:
        """The number that answers a message written to `phone_number_id`; None when that
        is not one of ours."""
        if not phone_number_id or phone_number_id == self.default:
            return self.default
        if not self.default or phone_number_id in self.others:
            return phone_number_id
        return None


@dataclass(frozen=True)
class Pacing:
    """Per-recipient token bucket: one send per `per_seconds`, up to `burst` at once."""

    per_seconds: float
    burst: int


@dataclass(frozen=True)
class Handoff:
    """When the bot hands a conversation to a person, and what it says then.

    `keywords`: what asks for a person (the LLM off or on); `release_keywords`: what hands
    it back to the bot (none by default); `acknowledgment`: the one reply sent on entering
    `waiting_human`; `reengagement`: the approved template (name, language) sent instead of
    any reply outside the 24-hour window (None: such a reply is held, `window_closed`)."""

    keywords: Keywords = NO_KEYWORDS
    release_keywords: Keywords = NO_KEYWORDS
    acknowledgment: str = DEFAULT_ACKNOWLEDGMENT
    reengagement: tuple[str, str] | None = None


NO_HANDOFF = Handoff()


@dataclass(frozen=True)
class Bursts:
    """How a customer's burst is answered (application/bursts.py): `quiet_seconds` after
    their newest message (0: every message is answered on its own), at most
    `max_wait_seconds` after the first unanswered one; `llm_per_minute` LLM pipelines per
    conversation and minute (0: unbounded), beyond which a template answers; `typing`: the
    outbox shows a typing indicator with each read receipt (refreshed while a reply is
    made). `shown` remembers, in this process, when it was last shown for a message."""

    quiet_seconds: float = 0.0
    max_wait_seconds: float = 12.0
    llm_per_minute: int = 0
    typing: bool = False
    shown: dict[str, float] = field(default_factory=dict, compare=False)

    @property
    def coalescing(self) -> bool:
        return self.quiet_seconds > 0


NO_BURSTS = Bursts()


@dataclass(frozen=True)
class StepContext:
    """What steps may use: the store (to read turns only), the outbox, the clock, the LLM.

    `instance_id` names this process in send claims; `sole_instance` says no other process
    can use the store (SQLite holds an exclusive lock), so a claim by another instance was
    left by a crashed predecessor. `llm` is None when the LLM is disabled. `hash_key` keys
    the hashes that stand for a customer (rollout bucket, conversation id, pacing bucket).
    `pacing` spaces one customer's sends (None: no spacing, as for the dry run).
    """

    store: StepStore
    outbox: Outbox
    clock: Callable[[], float]
    # The fallback replies in the business's voice (bootstrap reads them from their files).
    templates: ReplyTemplates
    instance_id: str = ""
    sole_instance: bool = False
    llm: LLMRouting | None = None
    hash_key: str = "pyloto-development-hash-key"
    pacing: Pacing | None = None
    # Where the media step fetches voice notes and pictures (None: it cannot, and falls back).
    media: MediaSource | None = None
    # True only while the step runs in the delivery that has just saved the record's send
    # claim: no request for it can have left yet, so there is nothing to reconcile.
    claim_made_here: bool = False
    # The last turns of the conversation the record names, loaded with the record for a step
    # that reads them (None: not loaded, the step reads them itself).
    turns: list[Turn] | None = None
    # Which business numbers are ours, and which one answers a message.
    numbers: BusinessNumbers = BusinessNumbers()
    handoff: Handoff = NO_HANDOFF
    # The customer's conversation, loaded with the record (None: none is stored yet).
    conversation: Conversation | None = None
    # The conversation's last records, loaded with the record for a step that reads them
    # (application/bursts.py; None: not loaded, the step reads them itself).
    records: list[Record] | None = None
    bursts: Bursts = NO_BURSTS
