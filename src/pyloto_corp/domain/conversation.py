"""The conversation: one per customer (keyed by their customer key, the keyed hash of their
BSUID when known, else of their number), in one of three modes (statecharts/
conversation.yaml): `bot` (the pipeline answers), `waiting_human` (a person was asked for:
the bot is silent) and `human` (an agent owns it: the bot is silent).

It also knows when the customer last wrote (Meta's timestamp), which bounds WhatsApp's
customer-service window: a free-form reply may be sent only within 24 hours of it."""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass, field, replace

from pyloto_corp.domain.statechart import Statechart, fail
from pyloto_corp.domain.writes import ConversationWrite

BOT, WAITING_HUMAN, HUMAN = "bot", "waiting_human", "human"
MODES = (BOT, WAITING_HUMAN, HUMAN)
HANDOFF_MODES = frozenset({WAITING_HUMAN, HUMAN})
# The inbound kind of an agent's reply written in pyloto (sent like the bot's replies).
AGENT_REPLY_KIND = "agent_reply"
# The fallback reason of the acknowledgment a handoff sends (its template is the setting).
HANDOFF_REASON = "handoff"

# Meta's customer-service window: a free-form message may be sent only within 24 hours of
# the customer's last message; outside it only an approved template (error 131047).
# https://developers.facebook.com/docs/whatsapp/cloud-api/guides/send-messages#customer-service-windows
WINDOW_SECONDS = 24 * 3600.0

# The conversation transitions (statecharts/conversation.yaml) and the reasons that fire
# them; a reason travels in the handoff webhook and the audit trail.
REQUEST_HUMAN, TAKE_OVER, RELEASE = "request_human", "take_over", "release"
REASONS = {
    "keyword": REQUEST_HUMAN,
    "llm_handoff": REQUEST_HUMAN,
    "operator_takeover": TAKE_OVER,
    "agent_reply": TAKE_OVER,
    "business_app_echo": TAKE_OVER,
    "agent_release": RELEASE,
    "idle_timeout": RELEASE,
    "customer_keyword": RELEASE,
}
TARGET = {REQUEST_HUMAN: WAITING_HUMAN, TAKE_OVER: HUMAN, RELEASE: BOT}

# How much of the audit trail a conversation keeps (newest last).
AUDIT_KEPT = 50


@dataclass(frozen=True)
class AuditEntry:
    """Who did what to the conversation, when (`who`: an account name, or `pyloto`)."""

    at: float
    who: str
    action: str


@dataclass(frozen=True)
class Conversation:
    """One customer's conversation, as stored."""

    key: str
    mode: str = BOT
    since: float = 0.0  # when it entered its mode
    reason: str = ""  # why it entered it
    owner: str = ""  # the agent who owns it (mode `human`)
    customer_at: float = 0.0  # Meta's timestamp of the customer's newest message
    # The record id of the customer's latest message accepted (agent replies answer it; only
    # it may answer the customer's burst).
    last_message: str = ""
    agent_at: float = 0.0  # the last agent activity (take over, reply, business app echo)
    version: int = 0  # each mode change adds one
    audit: tuple[AuditEntry, ...] = field(default=(), compare=False)

    @property
    def window_closes_at(self) -> float:
        """When WhatsApp's customer-service window closes (0: the customer never wrote)."""
        return self.customer_at + WINDOW_SECONDS if self.customer_at else 0.0

    def window_open(self, now: float) -> bool:
        return now < self.window_closes_at

    @property
    def silenced(self) -> bool:
        """Whether the bot must not answer: a person was asked for or owns it."""
        return self.mode in HANDOFF_MODES

    def idle_since(self) -> float:
        """Since when nothing happened that an agent did (or the handoff began)."""
        return max(self.since, self.agent_at)


def window_closes(customer_at: float) -> float:
    """When the window of a customer message stamped `customer_at` closes."""
    return customer_at + WINDOW_SECONDS if customer_at else 0.0


def _fold(text: str) -> str:
    """Lower case without accents or repeated blanks: 'Falar com um ATENDENTE!' and
    'falar com um atendente' match the same keyword."""
    decomposed = unicodedata.normalize("NFKD", text.casefold())
    plain = "".join(char for char in decomposed if not unicodedata.combining(char))
    return " ".join("".join(c if c.isalnum() else " " for c in plain).split())


@dataclass(frozen=True)
class Keywords:
    """Phrases that ask for something when the customer's text contains one of them as
    whole words (case, accents and punctuation aside)."""

    phrases: tuple[str, ...] = ()

    @classmethod
    def of(cls, phrases: Iterable[str]) -> Keywords:
        return cls(tuple(folded for folded in (_fold(p) for p in phrases) if folded))

    def match(self, text: str | None) -> str | None:
        """The phrase `text` contains, or None."""
        if not text or not self.phrases:
            return None
        padded = f" {_fold(text)} "
        for phrase in self.phrases:
            if f" {phrase} " in padded:
                return phrase
        return None


NO_KEYWORDS = Keywords()

# What a customer writes to ask for a person, in Brazilian Portuguese.
DEFAULT_HANDOFF_KEYWORDS = (
    "atendente",
    "atendimento humano",
    "falar com uma pessoa",
    "falar com alguem",
    "falar com um humano",
    "humano",
    "pessoa real",
)
DEFAULT_ACKNOWLEDGMENT = "Certo! Um atendente vai falar com você em breve."


def apply_write(
    current: Conversation | None, key: str, write: ConversationWrite
) -> Conversation | None:
    """The conversation after `write` (a missing one starts in `bot`), or None when the
    write expects another mode (or another newest message): the one rule every store
    applies (the Redis scripts in Lua, tested against this)."""
    conversation = current or Conversation(key)
    if write.expect_mode is not None and conversation.mode != write.expect_mode:
        return None
    if write.expect_newest and conversation.last_message not in ("", write.expect_newest):
        return None
    changes: dict[str, object] = {}
    if write.customer_at is not None:
        # The window follows the newest timestamp; the latest message, the latest accepted
        # (a burst is answered by it, whatever order Meta stamped them in).
        changes["customer_at"] = max(write.customer_at, conversation.customer_at)
        if write.message_id:
            changes["last_message"] = write.message_id
    if write.mode is not None:
        changes.update(
            mode=write.mode,
            since=write.at,
            reason=write.reason,
            owner=write.owner,
            version=conversation.version + 1,
        )
    if write.agent_activity:
        changes["agent_at"] = write.at
    if write.audit is not None:
        who, action = write.audit
        changes["audit"] = (*conversation.audit, AuditEntry(write.at, who, action))[-AUDIT_KEPT:]
    return replace(conversation, **changes)  # type: ignore[arg-type]


def check_chart(chart: Statechart) -> None:
    """The conversation statechart must be the one the code implements: the three modes,
    `bot` first, and each transition the code fires (REASONS) leading to its mode
    (TARGET); every mode reachable. Raises StatechartError naming the line."""
    if set(chart.states) != set(MODES) or chart.initial != BOT:
        raise fail(chart.path, chart.initial_line, f"the modes are {', '.join(MODES)}, from bot")
    fired = set(TARGET)
    for transition in chart.transitions:
        if transition.trigger not in fired:
            raise fail(chart.path, transition.line, f"the code never fires '{transition.trigger}'")
        if transition.dest != TARGET[transition.trigger]:
            raise fail(
                chart.path,
                transition.line,
                f"'{transition.trigger}' leads to '{TARGET[transition.trigger]}' in the code",
            )
    missing = fired - {t.trigger for t in chart.transitions}
    if missing:
        raise fail(chart.path, 1, f"no transition for {', '.join(sorted(missing))}")
