"""Gradual rollout: the customer's key decides, stable per customer, proportional overall."""

from __future__ import annotations

import hashlib
import hmac

import pytest

from pyloto_corp.ai.rollout import bucket, in_rollout
from pyloto_corp.application.llm_steps import conversation_id

KEY = "rollout-test-key"
SENDERS = [f"55{11 + n % 80:02d}9{n:08d}" for n in range(2000)]
CUSTOMERS = [conversation_id(sender, KEY) for sender in SENDERS]


def test_buckets_are_between_0_and_99_and_stable() -> None:
    """Each customer lands in one bucket of 0-99, the same every time it is asked."""
    buckets = [bucket(customer) for customer in CUSTOMERS]
    assert all(0 <= b <= 99 for b in buckets)
    assert buckets == [bucket(conversation_id(sender, KEY)) for sender in SENDERS]
    assert len(set(buckets)) == 100, "2,000 customers reach every bucket"


def test_a_number_keeps_the_bucket_its_sender_hash_gave() -> None:
    """A customer keyed by their number is in the bucket the sender's HMAC gave before
    customers had keys (its first 8 bytes modulo 100): no phone-only customer moves."""
    for sender in SENDERS[:300]:
        digest = hmac.new(KEY.encode(), sender.encode(), hashlib.sha256).digest()
        assert bucket(conversation_id(sender, KEY)) == int.from_bytes(digest[:8], "big") % 100


def test_the_key_changes_the_buckets() -> None:
    """Another key reshuffles customers (the bucket cannot be computed without the key)."""
    other = [bucket(conversation_id(sender, "another-key")) for sender in SENDERS[:200]]
    assert other != [bucket(customer) for customer in CUSTOMERS[:200]]


def test_zero_percent_takes_nobody_and_hundred_takes_everybody() -> None:
    """The extremes are exact: 0 % routes no customer to the LLM, 100 % routes all of them."""
    assert not any(in_rollout(customer, 0) for customer in CUSTOMERS)
    assert all(in_rollout(customer, 100) for customer in CUSTOMERS)


@pytest.mark.parametrize(("percent", "low", "high"), [(10, 140, 260), (50, 800, 1200)])
def test_the_share_on_the_llm_follows_the_percentage(percent: int, low: int, high: int) -> None:
    """Of 2,000 customers roughly `percent` % are in (a generous range: 40-60 % at 50)."""
    chosen = sum(in_rollout(customer, percent) for customer in CUSTOMERS)
    assert low <= chosen <= high


def test_raising_the_percentage_only_adds_customers() -> None:
    """Going from 10 % to 50 % to 100 % never moves a customer already on the LLM back off."""
    at_10 = {c for c in CUSTOMERS if in_rollout(c, 10)}
    at_50 = {c for c in CUSTOMERS if in_rollout(c, 50)}
    assert at_10 < at_50
    assert all(in_rollout(c, 100) for c in at_50)
