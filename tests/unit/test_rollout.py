"""Gradual rollout: a keyed hash of the sender decides, stable per sender, proportional overall."""

from __future__ import annotations

import pytest

from pyloto_corp.ai.rollout import bucket, in_rollout

KEY = "rollout-test-key"
SENDERS = [f"55{11 + n % 80:02d}9{n:08d}" for n in range(2000)]


def test_buckets_are_between_0_and_99_and_stable() -> None:
    """Each sender lands in one bucket of 0-99, the same every time it is asked."""
    buckets = [bucket(sender, KEY) for sender in SENDERS]
    assert all(0 <= b <= 99 for b in buckets)
    assert buckets == [bucket(sender, KEY) for sender in SENDERS]
    assert len(set(buckets)) == 100, "2,000 senders reach every bucket"


def test_the_key_changes_the_buckets() -> None:
    """Another key reshuffles senders (the bucket cannot be computed without the key)."""
    other = [bucket(sender, "another-key") for sender in SENDERS[:200]]
    assert other != [bucket(sender, KEY) for sender in SENDERS[:200]]


def test_zero_percent_takes_nobody_and_hundred_takes_everybody() -> None:
    """The extremes are exact: 0 % routes no sender to the LLM, 100 % routes all of them."""
    assert not any(in_rollout(sender, 0, KEY) for sender in SENDERS)
    assert all(in_rollout(sender, 100, KEY) for sender in SENDERS)


@pytest.mark.parametrize(("percent", "low", "high"), [(10, 140, 260), (50, 800, 1200)])
def test_the_share_on_the_llm_follows_the_percentage(percent: int, low: int, high: int) -> None:
    """Of 2,000 senders roughly `percent` % are in (a generous range: 40-60 % at 50)."""
    chosen = sum(in_rollout(sender, percent, KEY) for sender in SENDERS)
    assert low <= chosen <= high


def test_raising_the_percentage_only_adds_senders() -> None:
    """Going from 10 % to 50 % to 100 % never moves a sender already on the LLM back off it."""
    at_10 = {s for s in SENDERS if in_rollout(s, 10, KEY)}
    at_50 = {s for s in SENDERS if in_rollout(s, 50, KEY)}
    assert at_10 < at_50
    assert all(in_rollout(s, 100, KEY) for s in at_50)
