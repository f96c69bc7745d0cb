"""The masked view of a record, for operators: no phone numbers or names in clear."""

from __future__ import annotations

import copy
from typing import Any

from pyloto_corp.domain.privacy import mask_name, mask_phone, message_ref, redact_text
from pyloto_corp.domain.records import Record


def record_view(record: Record) -> dict[str, Any]:
    """The record as JSON-ready data with personal data masked (a serialization boundary:
    the answer of GET /internal/messages/{id} and `pyloto inspect`)."""
    inbound = record.inbound
    names = (inbound.contact_name,) if inbound.contact_name else ()
    reply = copy.deepcopy(record.reply) if record.reply is not None else None
    if reply is not None:
        reply["to"] = mask_phone(str(reply.get("to", "")))
        for part in (reply.get("text"), reply.get("interactive", {}).get("body")):
            for key in ("body", "text"):
                if isinstance(part, dict) and isinstance(part.get(key), str):
                    part[key] = redact_text(part[key], names)
    return {
        "message_id": record.message_id,
        "log_ref": message_ref(record.message_id),
        "state": record.state,
        "version": record.version,
        "created_at": record.created_at,
        "updated_at": record.updated_at,
        "inbound": {
            "kind": inbound.kind,
            "from": mask_phone(inbound.sender),
            "contact_name": mask_name(inbound.contact_name) if inbound.contact_name else None,
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
        "results": record.results.view(),
        "fallback_reason": record.fallback_reason,
        # Built from exception messages, which may quote what the customer sent.
        "failure_reason": redact_text(record.failure_reason, names)
        if record.failure_reason
        else None,
        "reply": reply,
        "outbound_message_id": record.outbound_message_id,
        "delivery_status": record.delivery_status,
        "delivery_errors": record.delivery_errors,
    }
