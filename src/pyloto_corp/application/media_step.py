"""The media step: a voice note becomes its transcript, a picture its description, so the
LLM steps answer what the customer said or showed instead of asking them to type.

It runs in `deduped` for the kinds in MEDIA_LIMITS (anything else goes straight to LLM#1):
the media is fetched through the media source (Graph's `GET /{media-id}`, then its URL),
checked against Meta's size limit and its sha256, held in memory only, and sent to the
assistant. Like the LLM steps it never raises for a failure of its own: the record falls
back, with its reason, to the deterministic template for its kind. The rollout percentage
and the LLM kill switch apply as to every LLM step.
"""

from __future__ import annotations

import logging
import time

from pyloto_corp.application.bursts import begin
from pyloto_corp.application.llm_steps import (
    call_cost,
    call_metrics,
    failed_call,
    fall_back,
    for_llm,
    route,
)
from pyloto_corp.application.ports import LLMFailure, MediaRejected
from pyloto_corp.application.registry import step
from pyloto_corp.application.step_context import StepContext
from pyloto_corp.domain.events import Collected, EventDetected, FellBack, MediaUnderstood
from pyloto_corp.domain.privacy import message_ref
from pyloto_corp.domain.records import Record

log = logging.getLogger(__name__)

MB = 1024 * 1024
# Meta's limits for what a customer can send: larger media is not even downloaded.
MEDIA_LIMITS = {"audio": 16 * MB, "image": 5 * MB, "sticker": MB // 2}
# Kept of a transcript or description: a voice note of a few minutes, a picture's essentials.
MEDIA_TEXT_CHARACTERS = 4000
STEP = "media"


def needs_media(record: Record) -> bool:
    """Whether the media step runs for this record: a kind it understands, not yet done."""
    return record.inbound.kind in MEDIA_LIMITS and record.results.media_text is None


@step("deduped", MediaUnderstood, Collected, EventDetected, FellBack)
async def after_dedupe(
    record: Record, ctx: StepContext
) -> MediaUnderstood | Collected | EventDetected | FellBack:
    """A voice note or picture goes through the media step; anything else waits out the
    customer's burst (coalescing on) or goes to LLM#1."""
    if needs_media(record):
        return await understand_media(record, ctx)
    return await begin(record, ctx)


async def understand_media(record: Record, ctx: StepContext) -> MediaUnderstood | FellBack:
    """Fetch the media, then transcribe the audio or describe the picture (with its caption)."""
    llm, reason = route(record, ctx, need_text=False)
    if llm is None:
        return fall_back(record, STEP, reason or "llm_disabled")
    if ctx.media is None:
        return fall_back(record, STEP, "media_unavailable", "no media source is configured")
    kind = record.inbound.kind
    media_id = record.inbound.details.get("id")
    if not isinstance(media_id, str) or not media_id:
        return fall_back(record, STEP, "media_unavailable", "the message names no media id")
    fetch_started = time.perf_counter()
    try:
        media = await ctx.media.fetch(media_id, MEDIA_LIMITS[kind], record.inbound.phone_number_id)
    except MediaRejected as rejected:
        metrics = {"latency_ms": _ms(fetch_started), "input_tokens": 0, "output_tokens": 0}
        return fall_back(record, STEP, rejected.reason, str(rejected), metrics)
    fetch_ms = _ms(fetch_started)
    started = time.perf_counter()
    audio = kind == "audio"
    try:
        if audio:
            result = await llm.assistant.transcribe(media.data, media.mime_type)
        else:
            caption = for_llm(record.inbound.text or "", record, llm.mask_pii)
            result = await llm.assistant.describe_image(media.data, media.mime_type, caption)
    except LLMFailure as failure:
        reason = "transcription_failed" if audio else "description_failed"
        detail = f"{failure.reason}: {failure}"
        return fall_back(record, STEP, reason, detail, call=failed_call(failure, started))
    text = result.value.strip()[:MEDIA_TEXT_CHARACTERS]
    log.info(
        "media_understood",
        extra={
            "event": "media_understood",
            "ref": message_ref(record.message_id),
            "kind": kind,
            "bytes": len(media.data),
            "mime_type": media.mime_type,
            "characters": len(text),
            "fetch_ms": fetch_ms,
            **call_metrics(result),
        },
    )
    return MediaUnderstood(
        kind="transcript" if audio else "description",
        text=text,
        size=len(media.data),
        call=call_cost(result),
    )


def _ms(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 1)
