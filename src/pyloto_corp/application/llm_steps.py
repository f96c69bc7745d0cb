"""LLM#1-3 as steps: each asks the assistant, validates, and falls back on any failure.

A failure never raises: it becomes a `FellBack` event with a reason (timeout,
rate_limited, api_error, refusal, unparsable, invalid_output, llm_disabled, sampled_out,
no_text, welcome), so a slow or broken LLM costs one step, not the queue's retries.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
import time
from dataclasses import asdict
from typing import Any

from pyloto_corp.ai import limits
from pyloto_corp.ai.rollout import in_rollout
from pyloto_corp.application.ports import LLMFailure, LLMResult
from pyloto_corp.application.registry import step
from pyloto_corp.application.step_context import LLMRouting, StepContext
from pyloto_corp.domain.events import EventDetected, FellBack, MessageTypeChosen, ReplyDrafted
from pyloto_corp.domain.privacy import message_ref, redact_names, redact_text
from pyloto_corp.domain.records import Record
from pyloto_corp.domain.results import LLMCall

log = logging.getLogger(__name__)

# WhatsApp's customer-service window: later turns cannot be replied to freely anyway.
CONVERSATION_WINDOW_SECONDS = 24 * 3600.0
# Fallback reasons that are configuration, not failure: `welcome` is a customer opening the
# chat for the first time (a `request_welcome`, which carries no text), greeted by the
# welcome template whether the LLM is on or off.
CHOSEN_FALLBACKS = frozenset({"llm_disabled", "sampled_out", "no_text", "welcome"})
# Kinds a template answers: with nothing to read, no LLM call is made for them.
# https://docs.360dialog.com/partner/messaging/sending-and-receiving-messages/text-messages/conversational-components
TEMPLATE_KINDS = {"request_welcome": "welcome"}
# Turns of the conversation kept and shown to LLM#2.
CONVERSATION_TURNS = 10


def conversation_id(sender: str, key: str) -> str:
    """A keyed hash standing for a customer's id (their BSUID or their number), so store
    keys never hold it."""
    return hmac.new(key.encode(), sender.encode(), hashlib.sha256).hexdigest()[:32]


def is_conversation_id(value: str) -> bool:
    """Whether `value` has conversation_id's shape (32 hex digits): a key from a link or a
    path is checked with this before any store is asked."""
    return _CONVERSATION_ID.fullmatch(value) is not None


_CONVERSATION_ID = re.compile(r"[0-9a-f]{32}")


def customer_key(record: Record, key: str) -> str:
    """The key of the record's customer (memory, pacing, rollout), as the accept step
    resolved it; for a record accepted before customers were keyed by BSUID, the hash of its
    sender, as it was then."""
    return record.conversation or conversation_id(record.inbound.sender, key)


def record_names(record: Record) -> tuple[str, ...]:
    """What names the customer in free text: their profile name and their username."""
    return record.inbound.names


def for_llm(text: str, record: Record, mask_pii: bool) -> str:
    """`text` as an LLM prompt may carry it, whoever wrote it (the customer, or an LLM that
    may have repeated them): never the contact's name, and masked when configured."""
    if mask_pii:
        return redact_text(text, record_names(record))
    return redact_names(text, record_names(record))  # their names are never sent


def customer_text(record: Record) -> str:
    """What the customer said: the messages of their burst the record answers, when it
    waited one out (application/bursts.py), else the record's own message."""
    burst = record.results.burst_texts
    if burst is not None:
        return "\n".join(text for text in burst if text.strip())
    return own_text(record)


def own_text(record: Record) -> str:
    """What the record's own message said: its text (a caption, for media) and what the
    media step made of their voice note (its transcript) or picture (its description)."""
    said = record.inbound.text or ""
    media = record.results.media_text
    if not media:
        return said
    if record.results.media_kind == "description":
        media = f"[imagem enviada: {media}]"
    return f"{said}\n{media}" if said.strip() else media


def llm_text(record: Record, mask_pii: bool) -> str:
    """The customer's text as the LLM may see it."""
    return for_llm(customer_text(record), record, mask_pii)


def call_cost(result: LLMResult[Any], failure: str = "") -> LLMCall:
    """What the record keeps of a call the server answered (`failure`: why its answer was
    not usable, when it was not)."""
    return LLMCall(
        result.latency_ms,
        result.input_tokens,
        result.output_tokens,
        result.model,
        result.requested_model,
        failure,
    )


def failed_call(failure: LLMFailure, started: float) -> LLMCall:
    """What the record keeps of a call that failed: its time, tokens, model and reason."""
    return LLMCall(
        latency_ms=round((time.perf_counter() - started) * 1000, 1),
        input_tokens=failure.input_tokens,
        output_tokens=failure.output_tokens,
        model=failure.model,
        requested_model=failure.model,
        failure=failure.reason,
    )


# The log line's fields (extra=): a serialization boundary.
def call_metrics(result: LLMResult[Any]) -> dict[str, Any]:
    return asdict(call_cost(result))


def _cost_fields(call: LLMCall | None) -> dict[str, Any]:  # log fields
    if call is None:
        return {"latency_ms": 0.0, "input_tokens": 0, "output_tokens": 0}
    return {
        "latency_ms": call.latency_ms,
        "input_tokens": call.input_tokens,
        "output_tokens": call.output_tokens,
    }


def fall_back(
    record: Record,
    step: str,
    reason: str,
    detail: str = "",
    metrics: dict[str, Any] | None = None,  # the log line's cost fields
    call: LLMCall | None = None,
) -> FellBack:
    """The `fall_back` event, logged once with the step and reason (a warning when the
    LLM failed, information when the configuration chose the template path), with the
    failed call's latency and tokens (zero when no call was made or nothing was counted);
    `call`: the call that failed, kept on the record (the console counts its outcome), whose
    latency and tokens the line carries unless `metrics` names them."""
    level = logging.INFO if reason in CHOSEN_FALLBACKS else logging.WARNING
    log.log(
        level,
        "llm_fallback",
        extra={
            "event": "llm_fallback",
            "ref": message_ref(record.message_id),
            "step": step,
            "reason": reason,
            "detail": detail,
            **(metrics or _cost_fields(call)),
        },
    )
    return FellBack(step=step, reason=reason, call=call)


def route(
    record: Record, ctx: StepContext, need_text: bool = True
) -> tuple[LLMRouting | None, str | None]:
    """The LLM routing of a step, or why the record falls back instead: a kind a template
    answers (`welcome`), the kill switch (`llm_disabled`), the rollout (`sampled_out`),
    nothing to read (`no_text`, unless the step makes the text itself, as the media step
    does)."""
    chosen = TEMPLATE_KINDS.get(record.inbound.kind)
    if chosen is not None:
        return None, chosen
    if ctx.llm is None:
        return None, "llm_disabled"
    if not in_rollout(customer_key(record, ctx.hash_key), ctx.llm.rollout_percent):
        return None, "sampled_out"
    if need_text and not customer_text(record).strip():
        return None, "no_text"
    return ctx.llm, None


async def detect_event(record: Record, ctx: StepContext) -> EventDetected | FellBack:
    """LLM#1: the event, its confidence and a summary without personal data."""
    llm, reason = route(record, ctx)
    if llm is None:
        return fall_back(record, "llm1", reason or "llm_disabled")
    started = time.perf_counter()
    try:
        result = await llm.assistant.detect_event(
            llm_text(record, llm.mask_pii), record.inbound.kind
        )
    except LLMFailure as failure:
        return fall_back(
            record, "llm1", failure.reason, str(failure), call=failed_call(failure, started)
        )
    detection = result.value
    metrics = call_metrics(result)
    log.info(
        "llm1_event_detected",
        extra={
            "event": "llm1_event_detected",
            "ref": message_ref(record.message_id),
            "detected": detection.event,
            "confidence": detection.confidence,
            **metrics,
        },
    )
    return EventDetected(
        event=detection.event,
        confidence=detection.confidence,
        # Meant to hold no personal data; an LLM may still repeat some (the name included).
        summary=redact_text(detection.summary, record_names(record)),
        call=call_cost(result),
    )


@step("llm1", ReplyDrafted, FellBack, reads_turns=True)
async def draft_reply(record: Record, ctx: StepContext) -> ReplyDrafted | FellBack:
    """LLM#2: the reply in the business's voice, from the conversation's last turns."""
    llm, reason = route(record, ctx)
    if llm is None:
        return fall_back(record, "llm2", reason or "llm_disabled")
    conversation = customer_key(record, ctx.hash_key)
    since = ctx.clock() - CONVERSATION_WINDOW_SECONDS
    if ctx.turns is not None and record.conversation == conversation:
        history = [turn for turn in ctx.turns if turn.at >= since][-CONVERSATION_TURNS:]
    else:
        history = await ctx.store.recent_turns(conversation, since, CONVERSATION_TURNS)
    event = record.results.event or "other"
    summary = for_llm(record.results.summary or "", record, llm.mask_pii)
    started = time.perf_counter()
    try:
        result = await llm.assistant.draft_reply(
            llm_text(record, llm.mask_pii), event, summary, history
        )
        draft = limits.text_message(result.value.text)["text"]["body"]
    except LLMFailure as failure:
        return fall_back(
            record, "llm2", failure.reason, str(failure), call=failed_call(failure, started)
        )
    except limits.InvalidMessage as error:
        invalid = call_cost(result, "invalid_output")
        return fall_back(
            record, "llm2", "invalid_output", str(error), call_metrics(result), invalid
        )
    metrics = call_metrics(result)
    log.info(
        "llm2_response_generated",
        extra={
            "event": "llm2_response_generated",
            "ref": message_ref(record.message_id),
            "characters": len(draft),
            "history_turns": len(history),
            **metrics,
        },
    )
    return ReplyDrafted(draft=draft, call=call_cost(result))


@step("llm2", MessageTypeChosen, FellBack)
async def choose_message_type(record: Record, ctx: StepContext) -> MessageTypeChosen | FellBack:
    """LLM#3: the message type, repaired to WhatsApp's limits or downgraded to text."""
    llm, reason = route(record, ctx)
    if llm is None:
        return fall_back(record, "llm3", reason or "llm_disabled")
    # LLM#2 wrote the draft, but it may repeat what the customer said.
    draft = for_llm(record.results.draft or "", record, llm.mask_pii)
    event = record.results.event or "other"
    started = time.perf_counter()
    try:
        result = await llm.assistant.choose_message_type(draft, event)
        built = limits.build_message(result.value, llm.allowed_hosts)
    except LLMFailure as failure:
        return fall_back(
            record, "llm3", failure.reason, str(failure), call=failed_call(failure, started)
        )
    except limits.InvalidMessage as error:
        invalid = call_cost(result, "invalid_output")
        return fall_back(
            record, "llm3", "invalid_output", str(error), call_metrics(result), invalid
        )
    metrics = call_metrics(result)
    log.info(
        "llm3_message_type_selected",
        extra={
            "event": "llm3_message_type_selected",
            "ref": message_ref(record.message_id),
            "chosen": result.value.type,
            "repairs": len(built.repairs),
            "downgraded_from": built.downgraded_from,
            **metrics,
        },
    )
    return MessageTypeChosen(
        message=built.message,
        message_type=result.value.type,
        repairs=tuple(built.repairs),
        downgraded_from=built.downgraded_from,
        call=call_cost(result),
    )
