"""What a transition writes besides its record: values a step's event carries, applied by
the store together with the record's save (one SQLite transaction, one Redis script call).

A step never writes to the store itself; it says what the save must also do."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from pyloto_corp.domain.records import Turn


@dataclass(frozen=True)
class SlotRequest:
    """One token of a recipient's pacing bucket (refilled one per `per_seconds`, holding at
    most `burst`): the save of a send claim happens only if it is taken."""

    key: str
    now: float
    per_seconds: float
    burst: int


@dataclass(frozen=True)
class TurnsWrite:
    """Turns added to a conversation, dropping those older than `window_seconds` or beyond
    the `keep` last."""

    conversation: str
    turns: Sequence[Turn]
    window_seconds: float
    keep: int


@dataclass(frozen=True)
class CustomerRequest:
    """The keyed hashes of a customer's number and BSUID (None where the message named
    none), resolved to their customer key by the save (see `ports.CustomerKeys`)."""

    phone_key: str | None
    user_key: str | None


@dataclass(frozen=True)
class ConversationWrite:
    """What a transition writes to the customer's conversation (domain/conversation.py).

    `key`: the conversation ('' for the customer key the same save resolves, an accept's).
    `customer_at`: Meta's timestamp of a customer message, kept if newer than the one held:
    it moves the 24-hour window; `message_id`, that message's record, becomes the latest.
    `expect_mode`: the save (record included) happens only if the conversation is in this
    mode, a missing conversation being in `bot`; otherwise nothing is saved and the store
    answers `StepSave.mode_changed`. `mode`: the mode it moves to (with `reason`, `owner`,
    since `at`, its version one up). `agent_activity`: an agent acted at `at` (the idle
    timeout restarts). `audit`: (who, action) added to its trail at `at`. `expect_newest`:
    like `expect_mode`, the save needs this record to be the customer's newest message
    still (a bot reply's send claim: a message that arrived while the reply was drafted
    supersedes the draft)."""

    key: str = ""
    customer_at: float | None = None
    message_id: str = ""
    expect_mode: str | None = None
    mode: str | None = None
    reason: str = ""
    owner: str = ""
    at: float = 0.0
    agent_activity: bool = False
    audit: tuple[str, str] | None = None
    expect_newest: str = ""


@dataclass(frozen=True)
class Writes:
    """What a transition writes besides its record; nothing by default."""

    slot: SlotRequest | None = None
    turns: TurnsWrite | None = None
    customer: CustomerRequest | None = None
    conversation: ConversationWrite | None = None


NO_WRITES = Writes()
