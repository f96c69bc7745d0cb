"""Gradual rollout: a keyed hash of the sender decides, so a customer keeps their path."""

from __future__ import annotations

import hashlib
import hmac


def bucket(sender: str, key: str) -> int:
    """The sender's bucket, 0-99, stable for a given key."""
    digest = hmac.new(key.encode(), sender.encode(), hashlib.sha256).digest()
    return int.from_bytes(digest[:8], "big") % 100


def in_rollout(sender: str, percent: int, key: str) -> bool:
    """Whether the sender's messages go through the LLM at `percent` rollout."""
    return bucket(sender, key) < percent
