"""The masked view of a record, for operators: no phone numbers or names in clear."""

from __future__ import annotations

from typing import Any

from pyloto_corp.domain.privacy import (
    mask_name,
    mask_phone,
    mask_user_id,
    message_ref,
    redact_text,
)
from pyloto_corp.domain.records import Record

# Fields of a Graph API request that are ours or Meta's, never the customer's words.
_REPLY_ENVELOPE = frozenset(
    {
        "messaging_product",
        "recipient_type",
        "to",
        "recipient",
        "context",
        "biz_opaque_callback_data",
        "type",
    }
)


def _masked(value: Any, names: tuple[str, ...]) -> Any:
    """`value` (JSON data) with every string masked: whoever wrote a text, the customer or
    an LLM, it may carry their personal data."""
    if isinstance(value, str):
        return redact_text(value, names)
    if isinstance(value, list):
        return [_masked(item, names) for item in value]
    if isinstance(value, dict):
        return {key: _masked(item, names) for key, item in value.items()}
    return value


# A Graph API request body (WhatsApp's shape) in, its JSON view out: a serialization boundary.
def _reply_view(reply: dict[str, Any] | None, names: tuple[str, ...]) -> dict[str, Any] | None:
    if reply is None:
        return None
    view = {
        key: value if key in _REPLY_ENVELOPE else _masked(value, names)
        for key, value in reply.items()
    }
    if "recipient" in reply:
        view["recipient"] = mask_user_id(str(reply["recipient"]))
    else:
        view["to"] = mask_phone(str(reply.get("to", "")))
    return view


def record_view(record: Record) -> dict[str, Any]:
    """The record as JSON-ready data with personal data masked (a serialization boundary:
    the answer of GET /internal/messages/{id} and `pyloto inspect`)."""
    inbound = record.inbound
    names = inbound.names
    results = record.results.view()
    # The transcript or description is the customer's words (or what they showed).
    for key in ("summary", "draft", "message", "previous_failure", "media_text", "burst_texts"):
        results[key] = _masked(results[key], names)
    results["window_replaced"] = _reply_view(record.results.window_replaced, names)
    return {
        "message_id": record.message_id,
        "log_ref": message_ref(record.message_id),
        "state": record.state,
        "version": record.version,
        # The customer's conversation (a keyed hash: GET /internal/conversations/{id}).
        "conversation": record.conversation or None,
        "created_at": record.created_at,
        "updated_at": record.updated_at,
        "inbound": {
            "kind": inbound.kind,
            "from": mask_phone(inbound.phone) if inbound.phone else None,
            "user_id": mask_user_id(inbound.bsuid) if inbound.bsuid else None,
            "contact_name": mask_name(inbound.contact_name) if inbound.contact_name else None,
            "username": mask_name(inbound.username) if inbound.username else None,
            "text": redact_text(inbound.text, names) if inbound.text else None,
            "timestamp": inbound.timestamp,
        },
        "history": [
            {
                "from": h.source,
                "to": h.dest,
                "trigger": h.trigger,
                "at": h.at,
                "duration_ms": h.duration_ms,
                "attempt": h.attempt,
            }
            for h in record.history
        ],
        "results": results,
        "fallback_reason": record.fallback_reason,
        # Built from exception messages, which may quote what the customer sent.
        "failure_reason": redact_text(record.failure_reason, names)
        if record.failure_reason
        else None,
        "reply": _reply_view(record.reply, names),
        "outbound_message_id": record.outbound_message_id,
        "delivery_status": record.delivery_status,
        "delivery_errors": record.delivery_errors,
        "outcome_unknown": _outcome_unknown(record),
    }


def _outcome_unknown(record: Record) -> dict[str, Any] | None:
    """A send whose outcome is unknown (domain/outcome.py): since when, how many, why."""
    if record.outcome_unknown_since is None:
        return None
    return {
        "since": record.outcome_unknown_since,
        "sends": record.unknown_sends,
        "why": record.outcome_unknown,
    }
