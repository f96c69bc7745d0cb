"""What a customer's message is about: the events LLM#1 detects (its JSON schema's enum)."""

from __future__ import annotations

from typing import Literal, get_args

Event = Literal[
    "greeting",
    "product_question",
    "price",
    "scheduling",
    "order_status",
    "support",
    "human_handoff",
    "opt_out",
    "spam",
    "other",
]
EVENTS: tuple[str, ...] = get_args(Event)
# Events answered by the fallback's generic template for the message's kind, not one of
# their own: nothing to say to spam, nor to a message about nothing known.
UNTEMPLATED_EVENTS = frozenset({"spam", "other"})
# The events that have a reply template of their own (`event.<name>` in the templates file).
TEMPLATED_EVENTS: tuple[str, ...] = tuple(e for e in EVENTS if e not in UNTEMPLATED_EVENTS)
