"""Gradual rollout: the customer's key decides, so a customer keeps their path.

The customer key is a keyed hash (`llm_steps.conversation_id`: the first 16 bytes of
HMAC-SHA256 of their BSUID, or of their number for a customer WhatsApp gives no BSUID for).
The bucket is its first 8 bytes modulo 100: for a number's key, the bucket the sender's
HMAC gave before customers were keyed by BSUID, so no such customer changes path.
"""

from __future__ import annotations


def bucket(customer: str) -> int:
    """The customer's bucket, 0-99, from their key (32 hex digits)."""
    return int(customer[:16], 16) % 100


def in_rollout(customer: str, percent: int) -> bool:
    """Whether the customer's messages go through the LLM at `percent` rollout."""
    return bucket(customer) < percent
