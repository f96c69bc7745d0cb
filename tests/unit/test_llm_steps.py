"""LLM#1-3 as steps, on a scripted assistant (our own port): routing, privacy, memory, failures.

The assistant here stands in for the Assistant port, not for the SDK: the SDK is exercised
over HTTP in tests/unit/test_openai_llm.py and tests/e2e/test_llm_pipeline.py.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import pytest

from pyloto_corp.ai import limits
from pyloto_corp.ai.limits import TEXT_BODY
from pyloto_corp.ai.schemas import EventDetection, MessageChoice, ReplyDraft
from pyloto_corp.application import llm_steps
from pyloto_corp.application.advance import Advancer
from pyloto_corp.application.llm_steps import (
    CONVERSATION_TURNS,
    CONVERSATION_WINDOW_SECONDS,
    choose_message_type,
    conversation_id,
    detect_event,
    draft_reply,
    llm_text,
)
from pyloto_corp.application.ports import (
    Assistant,
    LLMFailure,
    LLMResult,
    PermanentStepError,
)
from pyloto_corp.application.step_context import LLMRouting, StepContext
from pyloto_corp.application.steps import queue_reply
from pyloto_corp.domain.events import FellBack, ReplyQueued
from pyloto_corp.domain.records import Turn
from pyloto_corp.domain.replies import reply_body
from pyloto_corp.domain.results import LLMCall, Results
from tests.support.helpers import CONTACT_NAME, SENDER
from tests.unit.fakes import FakeClock, FakeStore, MakeRecord, PutRecord

pytestmark = pytest.mark.anyio

PERSONAL = (
    f"Sou a {CONTACT_NAME}, CPF 123.456.789-09, e-mail cliente@example.com, "
    "telefone +55 11 91234-5678. Quanto custa?"
)
MASKED = "Sou a [name], CPF [cpf], e-mail [email], telefone [phone]. Quanto custa?"
STEP_OF_STATE = {"deduped": detect_event, "llm1": draft_reply, "llm2": choose_message_type}


def choice(kind: str = "text", body: str = "Olá!", **parts: Any) -> MessageChoice:
    """LLM#3's answer with the parts not given left null."""
    fields: dict[str, Any] = dict.fromkeys(
        ["header", "footer", "buttons", "list_button_text", "sections", "cta_display_text"]
    )
    fields.update({"type": kind, "body": body, "cta_url": None, **parts})
    return MessageChoice.model_validate(fields)


class ScriptedAssistant:
    """The Assistant port answering from a script, keeping what it was asked."""

    def __init__(self) -> None:
        self.detection = EventDetection(event="price", confidence=0.9, summary="Quer o preço.")
        self.draft = ReplyDraft(text="O corte custa R$ 50.")
        self.choice = choice("text", "O corte custa R$ 50.")
        self.transcript = "Quanto custa o corte?"
        self.description = "Foto de um corte de cabelo curto."
        self.failures: dict[str, LLMFailure] = {}
        self.calls: list[tuple[str, tuple[Any, ...]]] = []

    def _answer(self, step: str, value: Any, *args: Any) -> LLMResult[Any]:
        self.calls.append((step, args))
        if step in self.failures:
            raise self.failures[step]
        return LLMResult(value, latency_ms=12.5, input_tokens=100, output_tokens=20, model="m")

    async def transcribe(self, audio: bytes, mime_type: str) -> LLMResult[str]:
        return self._answer("transcribe", self.transcript, audio, mime_type)

    async def describe_image(self, image: bytes, mime_type: str, caption: str) -> LLMResult[str]:
        return self._answer("describe_image", self.description, image, mime_type, caption)

    async def detect_event(self, text: str, kind: str) -> LLMResult[EventDetection]:
        return self._answer("detect_event", self.detection, text, kind)

    async def draft_reply(
        self, text: str, event: str, summary: str, history: Sequence[Turn]
    ) -> LLMResult[ReplyDraft]:
        return self._answer("draft_reply", self.draft, text, event, summary, list(history))

    async def choose_message_type(self, draft: str, event: str) -> LLMResult[MessageChoice]:
        return self._answer("choose_message_type", self.choice, draft, event)


@pytest.fixture
def assistant() -> ScriptedAssistant:
    """A scripted assistant answering everything."""
    return ScriptedAssistant()


@pytest.fixture
def llm_context(context: StepContext, assistant: ScriptedAssistant) -> StepContext:
    """The unit context with the LLM on for everyone, masking on, one allowed site."""
    routing = LLMRouting(
        assistant=assistant,
        rollout_percent=100,
        mask_pii=True,
        allowed_hosts=frozenset({"a.example"}),
    )
    return replace(context, llm=routing, hash_key="unit-hash-key")


async def test_the_scripted_assistant_stands_in_for_every_method_of_the_port(
    assistant: ScriptedAssistant,
) -> None:
    """The double has each of the port's methods (the media step's too), answering from its
    script or failing as told."""
    methods = {name for name in vars(Assistant) if not name.startswith("_")}
    assert methods == {name for name in vars(ScriptedAssistant) if not name.startswith("_")}
    heard = await assistant.transcribe(b"OggS", "audio/ogg")
    assert heard.value == assistant.transcript
    assistant.failures["describe_image"] = LLMFailure("refusal", "the model refused")
    with pytest.raises(LLMFailure):
        await assistant.describe_image(b"\x89PNG", "image/png", "Olha")
    assert assistant.calls == [
        ("transcribe", (b"OggS", "audio/ogg")),
        ("describe_image", (b"\x89PNG", "image/png", "Olha")),
    ]


# --- what the LLM may see -------------------------------------------------------------------


def test_masked_text_hides_personal_data_and_the_name(make_record: MakeRecord) -> None:
    """With masking on: CPF, e-mail, phone and the contact's name become placeholders."""
    assert llm_text(make_record(text=PERSONAL), mask_pii=True) == MASKED


def test_without_masking_only_the_contact_name_is_removed(make_record: MakeRecord) -> None:
    """With masking off the text goes as written, except the contact's name (whole or in
    parts), which is never sent."""
    text = f"{PERSONAL} Assinado: Aparecida"
    sent = llm_text(make_record(text=text), mask_pii=False)
    assert sent == (
        "Sou a [name], CPF 123.456.789-09, e-mail cliente@example.com, "
        "telefone +55 11 91234-5678. Quanto custa? Assinado: [name]"
    )


def test_a_message_without_contact_name_or_text(make_record: MakeRecord) -> None:
    """No contact name: nothing to remove; no text: an empty string."""
    record = make_record(text="Oi, Maria")
    record = replace(record, inbound=replace(record.inbound, contact_name=None))
    assert llm_text(record, mask_pii=False) == "Oi, Maria"
    assert llm_text(make_record(kind="image", text=None), mask_pii=True) == ""


def test_the_conversation_id_is_a_keyed_hash_of_the_sender() -> None:
    """Stable for a sender and key, different across keys, never the number itself."""
    first = conversation_id(SENDER, "key-a")
    assert first == conversation_id(SENDER, "key-a")
    assert first != conversation_id(SENDER, "key-b")
    assert first != conversation_id("5511900000000", "key-a")
    assert len(first) == 32
    assert SENDER not in first


# --- routing --------------------------------------------------------------------------------


@pytest.mark.parametrize("state", sorted(STEP_OF_STATE))
@pytest.mark.parametrize("text", [None, "   "], ids=["no-caption", "blank"])
async def test_media_without_a_caption_falls_back_as_no_text(
    state: str,
    text: str | None,
    make_record: MakeRecord,
    llm_context: StepContext,
    assistant: ScriptedAssistant,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """An image with no caption (or only spaces) has nothing for the LLM: `no_text`, logged
    at INFO (a chosen path, not a failure), and the assistant is not asked."""
    caplog.set_level(logging.INFO)
    outcome = await STEP_OF_STATE[state](
        make_record(kind="image", state=state, text=text), llm_context
    )
    assert outcome.trigger == "fall_back"
    assert outcome.reason == "no_text"
    assert assistant.calls == []
    (line,) = [r for r in caplog.records if r.getMessage() == "llm_fallback"]
    assert line.levelno == logging.INFO
    assert line.__dict__["reason"] == "no_text"
    assert line.__dict__["latency_ms"] == 0.0


async def test_a_welcome_request_makes_no_llm_call_with_the_llm_on(
    make_record: MakeRecord,
    llm_context: StepContext,
    assistant: ScriptedAssistant,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A customer opening the chat has written nothing: LLM#1 is not run on nothing; the
    record falls back as `welcome`, a chosen path logged at INFO."""
    caplog.set_level(logging.INFO)
    record = make_record(kind="request_welcome", state="deduped", text=None)
    outcome = await STEP_OF_STATE["deduped"](record, llm_context)
    assert (outcome.trigger, outcome.step, outcome.reason) == ("fall_back", "llm1", "welcome")
    assert assistant.calls == []
    (line,) = [r for r in caplog.records if r.getMessage() == "llm_fallback"]
    assert line.levelno == logging.INFO


@pytest.mark.parametrize("state", sorted(STEP_OF_STATE))
async def test_a_sender_outside_the_rollout_is_sampled_out(
    state: str, make_record: MakeRecord, llm_context: StepContext, assistant: ScriptedAssistant
) -> None:
    """At 0 % every step falls back `sampled_out` without asking the assistant."""
    assert llm_context.llm is not None
    context = replace(llm_context, llm=replace(llm_context.llm, rollout_percent=0))
    outcome = await STEP_OF_STATE[state](make_record(state=state), context)
    assert outcome.reason == "sampled_out"
    assert assistant.calls == []


# --- LLM#1 ----------------------------------------------------------------------------------


async def test_detect_event_records_the_event_and_a_redacted_summary(
    make_record: MakeRecord, llm_context: StepContext, assistant: ScriptedAssistant
) -> None:
    """LLM#1 is given the masked text and the kind; its event, confidence and summary are
    kept, the summary redacted again in case the model repeated personal data."""
    assistant.detection = EventDetection(
        event="order_status", confidence=0.7, summary="Pedido do CPF 123.456.789-09"
    )
    record = make_record(state="deduped", text=PERSONAL, results={"template": "earlier"})
    outcome = await detect_event(record, llm_context)
    assert outcome.trigger == "detect_event"
    assert assistant.calls == [("detect_event", (MASKED, "text"))]
    assert outcome.changes(record).results == Results(
        template="earlier",
        event="order_status",
        confidence=0.7,
        summary="Pedido do CPF [cpf]",
        llm1=LLMCall(latency_ms=12.5, input_tokens=100, output_tokens=20, model="m"),
    )


async def test_a_failed_call_falls_back_with_its_reason_and_cost(
    make_record: MakeRecord,
    llm_context: StepContext,
    assistant: ScriptedAssistant,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """LLMFailure becomes `fall_back` with its reason, logged as a warning with the step,
    the detail, the time spent and the tokens the failed call cost."""
    caplog.set_level(logging.INFO)
    assistant.failures["detect_event"] = LLMFailure(
        "refusal", "the model refused", input_tokens=80, output_tokens=3
    )
    outcome = await detect_event(make_record(state="deduped"), llm_context)
    assert outcome.trigger == "fall_back"
    assert isinstance(outcome, FellBack)
    assert (outcome.step, outcome.reason) == ("llm1", "refusal")
    assert outcome.call is not None  # kept on the record: the console counts its outcome
    assert (outcome.call.failure, outcome.call.input_tokens) == ("refusal", 80)
    (line,) = [r for r in caplog.records if r.getMessage() == "llm_fallback"]
    assert line.levelno == logging.WARNING
    fields = line.__dict__
    assert (fields["step"], fields["reason"]) == ("llm1", "refusal")
    assert fields["detail"] == "refusal: the model refused"
    assert (fields["input_tokens"], fields["output_tokens"]) == (80, 3)
    assert fields["latency_ms"] >= 0


# --- LLM#2 ----------------------------------------------------------------------------------


async def test_draft_reply_is_given_the_recent_conversation_and_the_event(
    make_record: MakeRecord,
    llm_context: StepContext,
    assistant: ScriptedAssistant,
    store: FakeStore,
    clock: FakeClock,
) -> None:
    """LLM#2 sees the sender's turns of the last 24 hours (at most the last ten), the event
    and summary from LLM#1, and the masked text; its draft is kept."""
    conversation = conversation_id(SENDER, llm_context.hash_key)
    old = Turn("customer", "mensagem de anteontem", clock() - CONVERSATION_WINDOW_SECONDS - 60)
    recent = [
        Turn("customer" if n % 2 else "business", f"turno {n}", clock() - 600 + n)
        for n in range(12)
    ]
    store.turns[conversation] = [old, *recent]
    store.turns[conversation_id("5511900000000", llm_context.hash_key)] = [
        Turn("customer", "outro", clock())
    ]
    record = make_record(
        state="llm1", text=PERSONAL, results={"event": "price", "summary": "Quer o preço."}
    )
    outcome = await draft_reply(record, llm_context)
    assert outcome.trigger == "draft_reply"
    ((step, (text, event, summary, history)),) = assistant.calls
    assert (step, text, event, summary) == ("draft_reply", MASKED, "price", "Quer o preço.")
    assert history == recent[-CONVERSATION_TURNS:]
    results = outcome.changes(record).results
    assert results.draft == "O corte custa R$ 50."
    assert results.llm2 is not None
    assert results.llm2.input_tokens == 100
    assert results.event == "price", "what LLM#1 found is kept"


async def test_draft_reply_without_an_event_says_other(
    make_record: MakeRecord, llm_context: StepContext, assistant: ScriptedAssistant
) -> None:
    """A record with no detected event (nothing from LLM#1) asks with event 'other'."""
    await draft_reply(make_record(state="llm1"), llm_context)
    ((_, (_, event, summary, history)),) = assistant.calls
    assert (event, summary, history) == ("other", "", [])


async def test_an_overlong_draft_is_cut_to_whatsapps_limit(
    make_record: MakeRecord, llm_context: StepContext, assistant: ScriptedAssistant
) -> None:
    """A draft over 4096 characters is kept cut to fit a text message."""
    assistant.draft = ReplyDraft(text="Frase longa o bastante. " * 300)
    outcome = await draft_reply(make_record(state="llm1"), llm_context)
    draft = outcome.draft
    assert len(draft) <= TEXT_BODY
    assert draft.endswith("bastante.")


async def test_a_blank_draft_is_invalid_output(
    make_record: MakeRecord,
    llm_context: StepContext,
    assistant: ScriptedAssistant,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A draft of only spaces passes the schema but cannot be sent: `invalid_output`, logged
    with the call's real latency and tokens."""
    caplog.set_level(logging.INFO)
    assistant.draft = ReplyDraft(text="   ")
    record = make_record(state="llm1", results={"event": "price"})
    outcome = await draft_reply(record, llm_context)
    assert outcome.reason == "invalid_output"
    assert outcome.changes(record).results == Results(
        event="price",
        fallback_step="llm2",
        failed_call=LLMCall(12.5, 100, 20, "m", failure="invalid_output"),
    )
    (line,) = [r for r in caplog.records if r.getMessage() == "llm_fallback"]
    assert (line.__dict__["latency_ms"], line.__dict__["input_tokens"]) == (12.5, 100)


@pytest.mark.parametrize("reason", ["timeout", "rate_limited", "api_error", "unparsable"])
async def test_draft_reply_failures_keep_what_llm1_learned(
    reason: str, make_record: MakeRecord, llm_context: StepContext, assistant: ScriptedAssistant
) -> None:
    """A failed LLM#2 falls back with its reason and keeps LLM#1's event for the template."""
    assistant.failures["draft_reply"] = LLMFailure(reason)
    record = make_record(state="llm1", results={"event": "support", "summary": "Reclamação."})
    outcome = await draft_reply(record, llm_context)
    assert outcome.reason == reason
    assert outcome.changes(record).results.event == "support"
    assert outcome.step == "llm2"


# --- LLM#3 ----------------------------------------------------------------------------------


async def test_choose_message_type_builds_the_message_within_limits(
    make_record: MakeRecord, llm_context: StepContext, assistant: ScriptedAssistant
) -> None:
    """LLM#3 is given the draft and the event; the built message, its type, repairs and
    downgrade are recorded."""
    assistant.choice = choice(
        "buttons", "Quer agendar?", buttons=[{"id": "s", "title": "Sim, quero agendar agora mesmo"}]
    )
    record = make_record(state="llm2", results={"event": "price", "draft": "Quer agendar?"})
    outcome = await choose_message_type(record, llm_context)
    assert assistant.calls == [("choose_message_type", ("Quer agendar?", "price"))]
    results = outcome.changes(record).results
    assert outcome.trigger == "choose_message_type"
    assert results.message is not None
    assert results.message["interactive"]["type"] == "button"
    assert results.message_type == "buttons"
    assert results.repairs == ["button title shortened to 20"]
    assert results.downgraded_from is None
    assert (results.event, results.draft) == ("price", "Quer agendar?")


async def test_a_blank_choice_body_is_invalid_output(
    make_record: MakeRecord, llm_context: StepContext, assistant: ScriptedAssistant
) -> None:
    """A body of only spaces cannot become any message: `invalid_output` at llm3."""
    assistant.choice = choice("text", "  ")
    outcome = await choose_message_type(make_record(state="llm2"), llm_context)
    assert outcome.reason == "invalid_output"
    assert outcome.step == "llm3"


async def test_a_failed_llm3_falls_back(
    make_record: MakeRecord, llm_context: StepContext, assistant: ScriptedAssistant
) -> None:
    """LLM#3's failure falls back with its reason."""
    assistant.failures["choose_message_type"] = LLMFailure("timeout", "no answer within 10 s")
    outcome = await choose_message_type(make_record(state="llm2"), llm_context)
    assert outcome.reason == "timeout"


# --- queue_reply and memory -----------------------------------------------------------------


async def test_queue_reply_sends_llm3s_valid_message(
    make_record: MakeRecord, context: StepContext
) -> None:
    """From llm3 a valid message becomes the Graph API request body as it is."""
    message = {"type": "text", "text": {"preview_url": False, "body": "Olá!"}}
    record = make_record(state="llm3", results={"message": message})
    outcome = await queue_reply(record, context)
    assert outcome.trigger == "queue_reply"
    assert outcome == ReplyQueued(reply=reply_body(record.inbound, message))


async def test_queue_reply_refuses_an_invalid_llm3_message(
    make_record: MakeRecord, context: StepContext
) -> None:
    """A message from llm3 that breaks a WhatsApp limit is never queued: the record falls
    back (`invalid_output`, at llm3) with what was wrong, and no reply is set."""
    four = [{"type": "reply", "reply": {"id": f"b{n}", "title": f"T{n}"}} for n in range(4)]
    message = {
        "type": "interactive",
        "interactive": {"type": "button", "body": {"text": "Olá"}, "action": {"buttons": four}},
    }
    record = make_record(state="llm3", results={"event": "price", "message": message})
    outcome = await queue_reply(record, context)
    assert outcome.trigger == "fall_back"
    assert outcome.reason == "invalid_output"
    assert outcome.step == "llm3"
    assert outcome.changes(record).reply is None


async def test_the_fallback_template_follows_the_detected_event(
    make_record: MakeRecord, context: StepContext
) -> None:
    """From `fallback` the template is the one of the event LLM#1 detected."""
    record = make_record(state="fallback", results={"event": "opt_out"})
    outcome = await queue_reply(record, context)
    assert outcome.template == "event:opt_out"
    assert "não vai mais receber" in outcome.reply["text"]["body"]


async def test_a_template_breaking_a_limit_is_never_queued(
    make_record: MakeRecord, context: StepContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Should a template ever break a limit, the record is dead-lettered, not sent."""
    monkeypatch.setattr(limits, "problems", lambda body: ["text body length"])
    with pytest.raises(PermanentStepError):
        await queue_reply(make_record(state="fallback"), context)


async def test_sending_remembers_the_masked_exchange(
    make_record: MakeRecord,
    store: FakeStore,
    context: StepContext,
    clock: FakeClock,
    advancer: Advancer,
) -> None:
    """After a send the customer's text (masked) and the reply's body join the sender's
    conversation, for LLM#2's next prompt: written by the save of the send."""
    message = {"type": "interactive", "interactive": {"type": "button", "body": {"text": "Quer?"}}}
    record = make_record(state="queued_outbound", text=PERSONAL)
    record = replace(record, reply=reply_body(record.inbound, message))
    store.put(record)
    assert await advancer.advance(record.message_id, "queued_outbound") == "sent"
    conversation = conversation_id(SENDER, context.hash_key)
    assert store.turns[conversation] == [
        Turn("customer", MASKED, clock()),
        Turn("business", "Quer?", clock()),
    ]


async def test_a_caption_less_image_remembers_only_the_reply(
    put_record: PutRecord, store: FakeStore, context: StepContext, advancer: Advancer
) -> None:
    """Nothing the customer wrote: only the business's reply is remembered."""
    record = put_record(kind="image", state="queued_outbound", text=None)
    assert await advancer.advance(record.message_id, "queued_outbound") == "sent"
    (turn,) = store.turns[conversation_id(SENDER, context.hash_key)]
    assert turn.role == "business"


def test_chosen_fallbacks_are_configuration_not_failures() -> None:
    """Disabled, sampled out, no text and a welcome request are the configured path, logged
    at INFO."""
    chosen = frozenset({"llm_disabled", "sampled_out", "no_text", "welcome"})
    assert chosen == llm_steps.CHOSEN_FALLBACKS
