"""What the steps of one record learned, as typed fields (stored inside the record)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True)
class LLMCall:
    """One LLM call's cost, as the record keeps it (never the prompt or the answer).

    `model` is the model as the server named it in its answer (often a dated snapshot);
    `requested_model` the one the call asked for (the setting), which the console counts
    calls by, so a call that failed and one that was answered count under the same name.
    `failure` is why the call gave no usable answer (the LLMFailure reason: timeout,
    refusal, invalid_output, ...), empty for a call that gave one.
    """

    latency_ms: float = 0.0
    input_tokens: int = 0
    output_tokens: int = 0
    model: str = ""
    requested_model: str = ""
    failure: str = ""


@dataclass(frozen=True)
class Results:
    """Each step's findings; a field stays None until its step has run.

    Records stored before these fields were typed held the same names in a JSON object:
    they decode into this class unchanged (unknown names are skipped).
    """

    # What the media step made of a voice note (`transcript`) or a picture (`description`):
    # the customer's words or what they showed, personal data kept only with the record.
    media_kind: str | None = None
    media_text: str | None = None
    media_bytes: int | None = None
    media: LLMCall | None = None
    ignored_kind: str | None = None
    ignored_reason: str | None = None
    event: str | None = None
    confidence: float | None = None
    summary: str | None = None
    llm1: LLMCall | None = None
    draft: str | None = None
    llm2: LLMCall | None = None
    # The Graph API message object LLM#3 built: its shape is WhatsApp's, not ours.
    message: dict[str, Any] | None = None
    message_type: str | None = None
    repairs: list[str] = field(default_factory=list)
    downgraded_from: str | None = None
    llm3: LLMCall | None = None
    template: str | None = None
    fallback_step: str | None = None
    # The LLM call that made the step fall back (its cost, model and failure); None when
    # the record fell back without one (the LLM off, sampled out, a template's kind).
    failed_call: LLMCall | None = None
    previous_failure: str | None = None
    # The conversation's mode that held the message for an agent (the bot said nothing).
    held_mode: str | None = None
    # The reply built before the 24-hour window closed, replaced by the re-engagement
    # template at the send claim (WhatsApp's shape).
    window_replaced: dict[str, Any] | None = None
    # Burst coalescing (application/bursts.py): when this message's step waits out the quiet
    # window until (`wake_at`); the customer's messages it answers, oldest first, as the
    # customer wrote them (`burst_texts`: personal data kept only with the record, masked in
    # prompts; `burst_ids`: their records) and when the first of them arrived
    # (`burst_since`); why a message ended without a reply of its own (`merged_reason`);
    # when the typing indicator was last shown for it (`typing_at`).
    wake_at: float | None = None
    burst_texts: list[str] | None = None
    burst_ids: list[str] = field(default_factory=list)
    burst_since: float | None = None
    merged_reason: str | None = None
    typing_at: float | None = None

    def view(self) -> dict[str, Any]:
        """The findings as JSON-ready data, for operators (a serialization boundary)."""
        return asdict(self)
