"""A send whose outcome is unknown: what pyloto does when Graph gives no usable answer.

Meta cannot be asked whether a request was delivered; the only word is a status webhook that
echoes the reply's key. A send is "outcome unknown" when the request may have reached Meta
and no answer says what became of it. The policy (docs/guarantees.md):

- the claim is kept and the record notes the outcome as unknown since the claim was made;
- each retry asks for a status about the reply; one that arrives records the send;
- after the reconcile window without one, the reply is sent once more on its own only when
  that attempt is likely the first to reach the customer: Graph answered with an error
  (131000 or a 5xx) or the delivery that claimed the send ended without a word. After Graph
  accepted (200 without a message id) or a request went unanswered, it is not: the record is
  dead-lettered, and only an operator's replay, confirmed knowing the reply may already have
  arrived, sends it again;
- at most MAX_UNKNOWN_SENDS sends of one reply may end unknown: the first and one more
  attempt. After that nothing sends it again, replay included.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pyloto_corp.domain.records import Record

# Why a send's outcome is unknown (the record's `outcome_unknown`).
GRAPH_ERROR = "graph_error"  # Graph answered 131000 or a 5xx: it may have sent all the same
NO_MESSAGE_ID = "no_message_id"  # Graph answered 2xx without the message id: it likely sent
NO_ANSWER = "no_answer"  # the request went out and no complete answer came back in time
CLAIM_ABANDONED = "claim_abandoned"  # the delivery that claimed the send ended without a word

# Unknown outcomes after which the send step tries once more by itself.
RESENT_ON_ITS_OWN = frozenset({GRAPH_ERROR, CLAIM_ABANDONED})

# Sends of one reply whose outcome may stay unknown: the first and one more attempt, so one
# upstream fault costs a customer at most two copies of a reply.
MAX_UNKNOWN_SENDS = 2


def since_text(at: float) -> str:
    """A time as the record and the console show it: ISO 8601, UTC, to the second."""
    return datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def resend_refusal(record: Record, waited: float) -> str | None:
    """Why the send step must not send `record`'s reply again by itself after waiting
    `waited` seconds for a status (the dead-letter reason), or None when it may."""
    if record.outcome_unknown_since is None:
        return None
    since = since_text(record.outcome_unknown_since)
    if record.unknown_sends >= MAX_UNKNOWN_SENDS:
        return (
            f"outcome unknown since {since} ({record.outcome_unknown}): "
            f"{record.unknown_sends} sends without a status webhook; no more attempts"
        )
    if record.outcome_unknown not in RESENT_ON_ITS_OWN:
        return (
            f"outcome unknown since {since} ({record.outcome_unknown}): no status webhook "
            f"within {waited:g} s; not sent again, the reply may already have arrived"
        )
    return None


def replay_refusal(record: Record, confirmed: bool) -> str | None:
    """Why an operator's replay must not send `record`'s reply again, or None."""
    if record.outcome_unknown_since is None:
        return None
    since = since_text(record.outcome_unknown_since)
    if record.unknown_sends >= MAX_UNKNOWN_SENDS:
        return (
            f"outcome unknown since {since}: {record.unknown_sends} sends may have reached "
            "the customer; no more attempts"
        )
    if not confirmed:
        return (
            f"outcome unknown since {since}: the reply may already have arrived; replay it "
            "with confirmation to send it once more"
        )
    return None
