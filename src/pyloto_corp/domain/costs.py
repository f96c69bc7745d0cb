"""What the line costs: the day's billable WhatsApp messages and LLM tokens, priced.

The counts come from the stores' day counters (domain.ops_metrics: `b:{category}` and
`k:{step}:in|out`); the prices from the settings (COST_* and *_PRICE_* variables). A price
of 0 means "not priced": the figures are shown and their cost is None (the console's "-"),
never a made-up zero.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from pyloto_corp.domain.ops_metrics import BILLABLE_PREFIX, LLM_STEPS, TOKENS_PREFIX
from pyloto_corp.domain.records import Record

PER_MILLION = 1_000_000


@dataclass(frozen=True)
class Prices:
    """Prices in one currency: per million LLM tokens, and per billable message (one price,
    or one per pricing category, which wins over it)."""

    input_per_million: float = 0.0
    output_per_million: float = 0.0
    per_billable: float = 0.0
    by_category: Mapping[str, float] = field(default_factory=dict)
    currency: str = "USD"

    @property
    def llm_priced(self) -> bool:
        """Whether any token price is set."""
        return self.input_per_million > 0 or self.output_per_million > 0

    def message_price(self, category: str) -> float | None:
        """The price of one billable message of `category`, or None when unpriced."""
        price = self.by_category.get(category, self.per_billable)
        return price if price > 0 else None


@dataclass(frozen=True)
class Tokens:
    """Input and output tokens of one step (or of all of them)."""

    input: int = 0
    output: int = 0

    def __add__(self, other: Tokens) -> Tokens:
        return Tokens(self.input + other.input, self.output + other.output)

    def cost(self, prices: Prices) -> float | None:
        """What these tokens cost, or None when no token price is set."""
        if not prices.llm_priced:
            return None
        return (
            self.input * prices.input_per_million + self.output * prices.output_per_million
        ) / PER_MILLION


def summed(tokens: Iterable[Tokens]) -> Tokens:
    """The tokens of several steps together."""
    total = Tokens()
    for part in tokens:
        total += part
    return total


@dataclass(frozen=True)
class DayCost:
    """One UTC day: billable messages by category, tokens by step, and their costs."""

    day: int  # the day's start, seconds since the epoch (UTC midnight)
    billable: dict[str, int]
    tokens: dict[str, Tokens]
    whatsapp_cost: float | None
    llm_cost: float | None

    @property
    def total_billable(self) -> int:
        """Billable messages of the day, every category."""
        return sum(self.billable.values())

    @property
    def total_tokens(self) -> Tokens:
        """Tokens of the day, every step."""
        return summed(self.tokens.values())

    @property
    def cost(self) -> float | None:
        """The day's known cost (None when nothing of it is priced)."""
        known = [c for c in (self.whatsapp_cost, self.llm_cost) if c is not None]
        return sum(known) if known else None


def whatsapp_cost(billable: Mapping[str, int], prices: Prices) -> float | None:
    """What billable messages cost; None when none of their categories is priced."""
    costs = [
        n * price
        for category, n in billable.items()
        if n and (price := prices.message_price(category)) is not None
    ]
    return sum(costs) if costs else None


def day_cost(day: int, counters: Mapping[str, int], prices: Prices) -> DayCost:
    """One day's figures from its counters."""
    billable = {
        name[len(BILLABLE_PREFIX) :]: n
        for name, n in counters.items()
        if name.startswith(BILLABLE_PREFIX) and n > 0
    }
    tokens = {
        step: Tokens(
            counters.get(f"{TOKENS_PREFIX}{step}:in", 0),
            counters.get(f"{TOKENS_PREFIX}{step}:out", 0),
        )
        for step in LLM_STEPS
    }
    tokens = {step: t for step, t in tokens.items() if t.input or t.output}
    total = summed(tokens.values())
    return DayCost(
        day=day,
        billable=dict(sorted(billable.items(), key=lambda item: (-item[1], item[0]))),
        tokens=tokens,
        whatsapp_cost=whatsapp_cost(billable, prices),
        llm_cost=total.cost(prices) if tokens else None,
    )


# The delivery statuses that say Meta delivered a reply: what a billable message is billed on.
DELIVERED = frozenset({"delivered", "read", "played"})


@dataclass(frozen=True)
class ConversationCost:
    """One conversation's share, from its records kept: the replies Meta accepted and
    delivered (each billable as a service message since 2026-10-01, so the estimate prices
    them at the `service` price), and the tokens its LLM steps used."""

    replies_sent: int
    replies_delivered: int
    tokens: dict[str, Tokens]
    whatsapp_estimate: float | None
    llm_cost: float | None

    @property
    def total_tokens(self) -> Tokens:
        """Tokens of every step."""
        return summed(self.tokens.values())


def conversation_cost(records: Iterable[Record], prices: Prices) -> ConversationCost:
    """What a conversation's records say it cost (at most the records the caller read)."""
    sent = delivered = 0
    tokens: dict[str, Tokens] = {}
    for record in records:
        if record.outbound_message_id:
            sent += 1
            if record.delivery_status in DELIVERED:
                delivered += 1
        results = record.results
        for step, call in (
            ("media", results.media),
            ("llm1", results.llm1),
            ("llm2", results.llm2),
            ("llm3", results.llm3),
        ):
            if call is not None and (call.input_tokens or call.output_tokens):
                tokens[step] = tokens.get(step, Tokens()) + Tokens(
                    call.input_tokens, call.output_tokens
                )
    total = summed(tokens.values())
    price = prices.message_price("service")
    return ConversationCost(
        replies_sent=sent,
        replies_delivered=delivered,
        tokens={step: tokens[step] for step in LLM_STEPS if step in tokens},
        whatsapp_estimate=delivered * price if price is not None and delivered else None,
        llm_cost=total.cost(prices) if tokens else None,
    )
