"""What the line costs: a status's pricing read tolerantly, the tokens a transition adds,
and the day's and a conversation's figures priced (0 = not priced, never a made-up 0)."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from pyloto_corp.adapters.whatsapp_webhook import parse_webhook
from pyloto_corp.config import ConfigError, load_settings
from pyloto_corp.domain.costs import Prices, Tokens, conversation_cost, day_cost
from pyloto_corp.domain.ops_metrics import billable_counter, token_amounts
from pyloto_corp.domain.records import HistoryEntry, Pricing, Record
from pyloto_corp.domain.results import LLMCall, Results
from tests.integration.factories import record
from tests.support.helpers import encode, envelope, load_payload, status


def parsed_pricing(pricing: Any) -> Pricing | None:
    """The pricing parse_webhook reads from one status carrying `pricing`."""
    item = status("wamid.OUT.P1", "delivered", 1_791_000_000) | {"pricing": pricing}
    parsed = parse_webhook(encode(envelope(statuses=[item])))
    assert len(parsed.statuses) == 1, "the status itself is always kept"
    return parsed.statuses[0].pricing


def test_a_per_message_pricing_status_reads_as_billable_service() -> None:
    """Meta's 2026 shape (PMP, `type: regular`, no conversation object), from a fixture."""
    payload = load_payload("messages/status_delivered_pmp.json", restamp=False)
    (update,) = parse_webhook(encode(payload)).statuses
    assert update.pricing == Pricing(billable=True, category="service", model="PMP")


def test_the_older_conversation_based_pricing_reads_as_it_says() -> None:
    payload = load_payload("messages/status_sent.json", restamp=False)
    (update,) = parse_webhook(encode(payload)).statuses
    assert update.pricing == Pricing(billable=False, category="service", model="CBP")


@pytest.mark.parametrize(
    ("pricing", "expected"),
    [
        # `billable` deprecated and absent: `type` decides.
        ({"category": "utility", "type": "regular"}, Pricing(True, "utility", "")),
        (
            {"category": "utility", "type": "free_customer_service", "pricing_model": "PMP"},
            Pricing(False, "utility", "PMP"),
        ),
        (
            {"category": "referral_conversion", "type": "free_entry_point"},
            Pricing(False, "referral_conversion", ""),
        ),
        # An explicit boolean wins over the type.
        (
            {"billable": True, "category": "Marketing", "type": "free_entry_point"},
            Pricing(True, "marketing", ""),
        ),
        (
            {"billable": True, "category": "service", "pricing_model": 7},
            Pricing(True, "service", ""),
        ),
    ],
)
def test_pricing_reads_billable_from_the_flag_or_else_the_type(
    pricing: dict[str, Any], expected: Pricing
) -> None:
    assert parsed_pricing(pricing) == expected


@pytest.mark.parametrize(
    "pricing",
    [
        None,
        "service",
        ["service"],
        7,
        {},
        {"billable": True},
        {"billable": True, "category": ""},
        {"billable": True, "category": 12},
        {"billable": "yes", "category": "service"},
        {"category": "service", "type": 3},
    ],
)
def test_unreadable_pricing_is_none_and_never_costs_the_status(pricing: Any) -> None:
    assert parsed_pricing(pricing) is None


def test_a_long_category_is_cut_and_folded_into_a_safe_counter_name() -> None:
    pricing = parsed_pricing({"billable": True, "category": "x" * 500 + " y"})
    assert pricing is not None
    assert len(pricing.category) == 48
    assert billable_counter("Service Extra!") == "b:service_extra_"


def llm_record(step: str, call: LLMCall | None, dest: str | None = None) -> Record:
    """A record whose last transition led to `dest` (default `step`) with `call` kept as
    `step`'s result."""
    dest = dest or step
    results = replace(Results(), **{step: call})
    entry = HistoryEntry("deduped", dest, "t", 10.0, 5.0, 1)
    return replace(record(), state=dest, history=[entry], results=results)


@pytest.mark.parametrize("step", ["media", "llm1", "llm2", "llm3"])
def test_an_llm_steps_transition_adds_its_call_tokens(step: str) -> None:
    call = LLMCall(latency_ms=3.0, input_tokens=100, output_tokens=20, model="m")
    assert token_amounts(llm_record(step, call)) == (
        (f"k:{step}:in", 100),
        (f"k:{step}:out", 20),
    )


def test_other_transitions_and_empty_calls_add_no_tokens() -> None:
    call = LLMCall(input_tokens=100, output_tokens=20)
    assert token_amounts(llm_record("llm1", call, dest="llm2")) == ()  # llm2's result is None
    assert token_amounts(llm_record("llm1", call, dest="fallback")) == ()
    assert token_amounts(llm_record("llm1", None)) == ()
    assert token_amounts(llm_record("llm1", LLMCall(input_tokens=9))) == (("k:llm1:in", 9),)
    stale = replace(llm_record("llm1", call), state="llm2")  # history ends elsewhere
    assert token_amounts(stale) == ()


def test_a_day_is_priced_per_category_and_per_million_tokens() -> None:
    prices = Prices(
        input_per_million=2.0,
        output_per_million=8.0,
        per_billable=0.01,
        by_category={"marketing": 0.05},
    )
    counters = {
        "b:service": 3,
        "b:marketing": 2,
        "k:llm1:in": 500_000,
        "k:llm1:out": 100_000,
        "k:llm2:in": 500_000,
        "t:>received": 9,  # another counter of the day bucket: ignored
    }
    day = day_cost(86_400, counters, prices)
    assert day.billable == {"service": 3, "marketing": 2}
    assert day.total_billable == 5
    assert day.tokens == {"llm1": Tokens(500_000, 100_000), "llm2": Tokens(500_000, 0)}
    assert day.whatsapp_cost == pytest.approx(0.13)
    assert day.llm_cost == pytest.approx(2.8)
    assert day.cost == pytest.approx(2.93)


def test_without_prices_a_day_has_its_counts_and_no_cost() -> None:
    day = day_cost(0, {"b:service": 3, "k:llm3:out": 40}, Prices())
    assert (day.total_billable, day.total_tokens) == (3, Tokens(0, 40))
    assert (day.whatsapp_cost, day.llm_cost, day.cost) == (None, None, None)
    # A category priced alone: the others stay unpriced, not free.
    only = day_cost(0, {"b:service": 3, "b:utility": 1}, Prices(by_category={"utility": 0.5}))
    assert only.whatsapp_cost == pytest.approx(0.5)


def test_a_conversation_counts_its_replies_delivered_and_its_tokens() -> None:
    call = LLMCall(input_tokens=1_000, output_tokens=100)
    delivered = replace(
        llm_record("llm1", call),
        outbound_message_id="wamid.OUT.1",
        delivery_status="read",
    )
    failed = replace(
        llm_record("llm2", LLMCall(input_tokens=10)),
        outbound_message_id="wamid.OUT.2",
        delivery_status="failed",
    )
    unsent = llm_record("media", None)
    cost = conversation_cost(
        [delivered, failed, unsent], Prices(input_per_million=1.0, per_billable=0.02)
    )
    assert (cost.replies_sent, cost.replies_delivered) == (2, 1)
    assert cost.tokens == {"llm1": Tokens(1_000, 100), "llm2": Tokens(10, 0)}
    assert cost.total_tokens == Tokens(1_010, 100)
    assert cost.whatsapp_estimate == pytest.approx(0.02)
    assert cost.llm_cost == pytest.approx(0.00101)
    unpriced = conversation_cost([delivered], Prices())
    assert (unpriced.whatsapp_estimate, unpriced.llm_cost) == (None, None)


def test_prices_are_read_from_the_settings_and_bad_ones_refused_by_name() -> None:
    costs = load_settings(
        {
            "LLM_PRICE_INPUT_PER_MILLION": "0.15",
            "LLM_PRICE_OUTPUT_PER_MILLION": "0.6",
            "WHATSAPP_PRICE_PER_BILLABLE": "0.0068",
            "WHATSAPP_PRICES_BY_CATEGORY": "Marketing=0.0625, utility=0.0068,",
            "COST_CURRENCY": "BRL",
        }
    ).costs
    assert costs.whatsapp_by_category == {"marketing": 0.0625, "utility": 0.0068}
    assert (costs.llm_input_per_million, costs.currency) == (0.15, "BRL")
    assert load_settings({}).costs.whatsapp_by_category == {}
    for variable, value in (
        ("WHATSAPP_PRICES_BY_CATEGORY", "marketing"),
        ("WHATSAPP_PRICES_BY_CATEGORY", "marketing=-1"),
        ("WHATSAPP_PRICES_BY_CATEGORY", "=1"),
        ("WHATSAPP_PRICES_BY_CATEGORY", "service=nan"),
        ("LLM_PRICE_INPUT_PER_MILLION", "-0.1"),
        ("WHATSAPP_PRICE_PER_BILLABLE", "inf"),
    ):
        with pytest.raises(ConfigError, match=variable):
            load_settings({variable: value})
