"""`pyloto llm check`: each LLM step asked once of the configured provider, with its own
schema, and one line saying how it was served (or why it was not).

The probes carry no customer data: fixed Portuguese texts, a blank picture, a silent audio.
"""

from __future__ import annotations

import io
import struct
import wave
import zlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from pyloto_corp.adapters.openai_llm import OpenAIAssistant
from pyloto_corp.application.ports import LLMFailure, LLMResult

QUESTION = "Olá! Quanto custa um corte de cabelo?"
DRAFT = "Olá! O corte custa R$ 50. Quer agendar um horário?"


@dataclass(frozen=True)
class StepCheck:
    """How one step fared: `detail` says what worked, or why it failed."""

    step: str
    ok: bool
    detail: str

    def line(self) -> str:
        """The line `pyloto llm check` prints for this step."""
        return f"{self.step}: {'ok' if self.ok else 'FAILED'}: {self.detail}"


async def check(
    assistant: OpenAIAssistant, *, vision: bool, transcription: bool
) -> list[StepCheck]:
    """Probe the three chat steps, then the picture description and the transcription when
    they are configured; one step after the other, so each line tells what the step before
    it left negotiated."""
    probes: list[tuple[str, Callable[[], Awaitable[LLMResult[Any]]]]] = [
        ("llm1", lambda: assistant.detect_event(QUESTION, "text")),
        ("llm2", lambda: assistant.draft_reply(QUESTION, "price", "Pergunta de preço.", [])),
        ("llm3", lambda: assistant.choose_message_type(DRAFT, "price")),
    ]
    if vision:
        probes.append(("vision", lambda: assistant.describe_image(blank_png(), "image/png", "")))
    results = [await _chat_check(assistant, step, probe) for step, probe in probes]
    if transcription:
        results.append(await _transcription_check(assistant))
    return results


async def _chat_check(
    assistant: OpenAIAssistant, step: str, probe: Callable[[], Awaitable[LLMResult[Any]]]
) -> StepCheck:
    try:
        result = await probe()
    except LLMFailure as failure:
        return StepCheck(step, False, str(failure))
    # Nothing else calls the assistant meanwhile: its settings are what this call used.
    temperature = (
        "no temperature sent"
        if assistant.temperature is None
        else f"temperature {assistant.temperature:g} sent"
    )
    return StepCheck(
        step,
        True,
        f"{assistant.mode}, {temperature}, {result.latency_ms:.0f} ms, model {result.model}",
    )


async def _transcription_check(assistant: OpenAIAssistant) -> StepCheck:
    model = assistant.transcription_model
    try:
        result = await assistant.transcribe(silent_wav(), "audio/wav")
    except LLMFailure as failure:
        if failure.reason == "empty_transcript":  # the server answered: silence has no words
            return StepCheck("transcription", True, f"no words in the silent probe, model {model}")
        return StepCheck("transcription", False, str(failure))
    return StepCheck("transcription", True, f"{result.latency_ms:.0f} ms, model {model}")


def blank_png(size: int = 8) -> bytes:
    """A white square as a PNG, made here (no file to ship)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", size, size, 8, 2, 0, 0, 0)  # 8-bit RGB
    rows = b"".join(b"\x00" + b"\xff" * 3 * size for _ in range(size))
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )


def silent_wav(seconds: float = 0.5, rate: int = 16000) -> bytes:
    """Half a second of silence as a 16-bit mono WAV."""
    out = io.BytesIO()
    with wave.open(out, "wb") as audio:
        audio.setnchannels(1)
        audio.setsampwidth(2)
        audio.setframerate(rate)
        audio.writeframes(b"\x00\x00" * int(seconds * rate))
    return out.getvalue()
