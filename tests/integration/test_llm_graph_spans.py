"""Spans and metrics of the outside calls: the three LLM steps and the Graph API sends.

The app runs on the real `openai` SDK against `pyloto fake-openai` and on the Graph adapter
against tests/support/fake_graph.py; its telemetry is the real SDK built from the repository's
otel.yaml, with in-memory exporters behind the production redacting wrapper, so what is
read here is what would leave the process.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

import pytest
from litestar.testing import AsyncTestClient
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import SpanKind, StatusCode

from pyloto_corp.bootstrap import bootstrap
from pyloto_corp.config import Settings
from pyloto_corp.devtools.fake_openai import CHOICE, DEFAULTS, DRAFT, EVENT, FakeOpenAI, json_answer
from pyloto_corp.http.app import create_app
from pyloto_corp.observability.redaction import keyed_hash
from tests.e2e.support import LLM_PATH, Pyloto, trajectory
from tests.support.fake_graph import PHONE_NUMBER_ID, TOKEN, FakeGraph, Fault
from tests.support.helpers import CONTACT_NAME, SENDER, envelope, text_message
from tests.support.telemetry_capture import HASH_KEY, Captured

pytestmark = pytest.mark.anyio

MODEL = "gpt-4o-mini"
CHAT = f"chat {MODEL}"
# The fake's usage block: {"prompt_tokens": 120, "completion_tokens": 40}.
INPUT_TOKENS, OUTPUT_TOKENS = 120, 40
# LLM#n runs in the step of the state before it and moves the record to `llmN`.
STEP_OF_CALL = {"llm1": "deduped", "llm2": "llm1", "llm3": "llm2"}
QUESTION = "Quanto custa o corte? Meu e-mail é maria.aparecida@exemplo.com.br"
TIMEOUT_SECONDS = 0.5  # OPENAI_TIMEOUT_SECONDS in the timeout case
SLOW_ANSWER_SECONDS = 1.5  # the fake's delay then: well past the timeout


OpenApp = Callable[..., AbstractAsyncContextManager[Pyloto]]


@pytest.fixture
def open_app(make_settings: Callable[..., Settings], captured: Captured) -> OpenApp:
    """Start the app with these variables and the captured telemetry."""

    @asynccontextmanager
    async def open_with(**variables: str) -> AsyncIterator[Pyloto]:
        settings = make_settings(PRIVACY_HASH_KEY=HASH_KEY, **variables)
        async with AsyncTestClient(
            app=create_app(bootstrap(settings, telemetry=captured.runtime))
        ) as client:
            yield Pyloto(client)

    return open_with


def llm_variables(fake: FakeOpenAI, timeout: float = 5.0) -> dict[str, str]:
    """The LLM on the fake server, no SDK retries."""
    return {
        "OPENAI_API_KEY": "sk-test",
        "OPENAI_BASE_URL": fake.base_url,
        "OPENAI_MODEL": MODEL,
        "OPENAI_TIMEOUT_SECONDS": str(timeout),
        "OPENAI_MAX_RETRIES": "0",
        "BUSINESS_NAME": "Barbearia Navalha",
    }


def graph_variables(fake: FakeGraph) -> dict[str, str]:
    """Replies through the Graph adapter on the fake server."""
    return {
        "WHATSAPP_ACCESS_TOKEN": TOKEN,
        "WHATSAPP_PHONE_NUMBER_ID": PHONE_NUMBER_ID,
        "WHATSAPP_API_BASE_URL": fake.base_url,
        "WHATSAPP_TIMEOUT_SECONDS": "2",
    }


async def run_message(app: Pyloto, text: str) -> dict[str, Any]:
    """Post one signed text message, wait for its terminal state and for the queue to idle."""
    message = text_message(text)
    response = await app.post(envelope([message]))
    assert response.status_code == 200, response.text
    view = await app.wait_for(message["id"])
    await app.wait_idle()
    return view


def attributes_of(span: ReadableSpan) -> dict[str, Any]:
    """The span's attributes as a plain dict."""
    return dict(span.attributes or {})


def step_span(spans: list[ReadableSpan], state: str) -> ReadableSpan:
    """The one `step <state>` span."""
    (found,) = [span for span in spans if span.name == f"step {state}"]
    return found


def every_text(span: ReadableSpan) -> list[str]:
    """Every string a span exports: name, attribute values, events, links, status."""
    texts = [span.name, span.status.description or ""]
    attribute_sets = [span.attributes or {}, *(event.attributes or {} for event in span.events)]
    attribute_sets += [link.attributes or {} for link in span.links]
    texts += [event.name for event in span.events]
    for attributes in attribute_sets:
        for value in attributes.values():
            items = value if isinstance(value, list | tuple) else [value]
            texts += [item for item in items if isinstance(item, str)]
    return texts


# --- the LLM steps ------------------------------------------------------------------------


async def test_each_llm_step_is_a_client_span_under_its_step_with_gen_ai_attributes(
    open_app: OpenApp, captured: Captured, fake_openai: FakeOpenAI
) -> None:
    """The LLM path gives three `chat gpt-4o-mini` CLIENT spans with gen_ai.operation.name,
    system, request and response model and the fake's token usage, one per step (llm1, llm2,
    llm3), each the child of the step span that moves the record to that state (LLM#1 runs
    in `step deduped`, LLM#2 in `step llm1`, LLM#3 in `step llm2`); each call is counted ok."""
    async with open_app(**llm_variables(fake_openai)) as app:
        view = await run_message(app, QUESTION)
    assert trajectory(view) == LLM_PATH

    spans = captured.spans()
    chats = captured.named(CHAT)
    assert [attributes_of(span)["pyloto.llm.step"] for span in chats] == ["llm1", "llm2", "llm3"]
    for chat in chats:
        attributes = attributes_of(chat)
        step = attributes["pyloto.llm.step"]
        assert chat.kind is SpanKind.CLIENT
        assert chat.status.status_code is StatusCode.UNSET
        assert attributes["gen_ai.operation.name"] == "chat"
        assert attributes["gen_ai.system"] == "openai"
        assert attributes["gen_ai.request.model"] == MODEL
        assert attributes["gen_ai.response.model"] == MODEL
        assert attributes["gen_ai.usage.input_tokens"] == INPUT_TOKENS
        assert attributes["gen_ai.usage.output_tokens"] == OUTPUT_TOKENS
        assert isinstance(attributes["pyloto.llm.latency_ms"], float)
        assert "error.type" not in attributes
        parent = step_span(spans, STEP_OF_CALL[step])
        assert attributes_of(parent)["pyloto.state.to"] == step
        assert chat.parent is not None
        assert chat.parent.span_id == parent.context.span_id
        assert chat.context.trace_id == parent.context.trace_id

    assert captured.points("pyloto.llm.calls") == {
        (("pyloto.llm.step", step), ("pyloto.outcome", "ok")): 1 for step in STEP_OF_CALL
    }


async def test_no_span_carries_the_prompt_or_the_completion(
    open_app: OpenApp, captured: Captured, fake_openai: FakeOpenAI
) -> None:
    """Neither the customer's text, the prompts sent nor the answers received appear in any
    exported span: not in names, attributes, events, links or statuses."""
    async with open_app(**llm_variables(fake_openai)) as app:
        view = await run_message(app, QUESTION)
    assert view["state"] == "sent"

    prompts = [
        str(message["content"])
        for request in fake_openai.requests
        for message in request["messages"]
    ]
    assert len(fake_openai.requests) == 3
    completions = [
        DEFAULTS[EVENT]["summary"],
        DEFAULTS[DRAFT]["text"],
        DEFAULTS[CHOICE]["body"],
        *(button["title"] for button in DEFAULTS[CHOICE]["buttons"]),
    ]
    secrets = [QUESTION, "Quanto custa o corte", "maria.aparecida", *completions, *prompts]
    spans = captured.spans()
    assert len(spans) >= 3 + len(LLM_PATH) - 1
    for span in spans:
        serialised = span.to_json()
        for secret in secrets:
            assert secret not in serialised, (span.name, secret[:40])
        for text in every_text(span):
            if len(text) >= 12:  # long enough to be text rather than a word or an id
                assert not any(text in prompt for prompt in prompts), (span.name, text)
                assert not any(text in answer for answer in completions), (span.name, text)


async def test_a_timed_out_llm_call_is_a_failed_span_and_a_timeout_count(
    open_app: OpenApp, captured: Captured, fake_openai: FakeOpenAI
) -> None:
    """LLM#1 answering after OPENAI_TIMEOUT_SECONDS gives one `chat` span with error.type
    `timeout` and an error status; pyloto.llm.calls counts llm1/timeout; the record falls
    back and no LLM#2 or LLM#3 call is made."""
    fake_openai.queue(EVENT, json_answer(DEFAULTS[EVENT], delay=SLOW_ANSWER_SECONDS))
    async with open_app(**llm_variables(fake_openai, timeout=TIMEOUT_SECONDS)) as app:
        view = await run_message(app, "Qual o preço do corte?")
    assert view["state"] == "sent"
    assert view["fallback_reason"] == "timeout"

    (chat,) = captured.named(CHAT)
    attributes = attributes_of(chat)
    assert attributes["pyloto.llm.step"] == "llm1"
    assert attributes["error.type"] == "timeout"
    assert attributes["gen_ai.usage.input_tokens"] == 0
    assert "gen_ai.response.model" not in attributes
    assert chat.status.status_code is StatusCode.ERROR
    assert chat.status.description == "timeout"
    assert chat.parent is not None
    assert chat.parent.span_id == step_span(captured.spans(), "deduped").context.span_id
    assert captured.points("pyloto.llm.calls") == {
        (("pyloto.llm.step", "llm1"), ("pyloto.outcome", "timeout")): 1
    }
    assert captured.points("pyloto.fallbacks") == {(("pyloto.fallback.reason", "timeout"),): 1}


# --- the Graph API ------------------------------------------------------------------------


async def test_a_graph_send_is_a_client_span_with_the_http_status(
    open_app: OpenApp, captured: Captured, graph: FakeGraph
) -> None:
    """A reply sent through Graph gives a `whatsapp send` CLIENT span under `step
    queued_outbound` with http.response.status_code 200, the server's host and no error;
    the read receipt is a `whatsapp mark_read` span under `step deduped` (where the
    conversation is known); no send error is counted."""
    async with open_app(**graph_variables(graph)) as app:
        view = await run_message(app, "Qual o horário de vocês?")
    assert view["state"] == "sent"
    assert len(graph.sends) == 1

    spans = captured.spans()
    (send,) = captured.named("whatsapp send")
    attributes = attributes_of(send)
    assert send.kind is SpanKind.CLIENT
    assert attributes["http.response.status_code"] == 200
    assert attributes["pyloto.whatsapp.operation"] == "send"
    assert attributes["server.address"] == "127.0.0.1"
    assert "pyloto.whatsapp.error_code" not in attributes
    assert "error.type" not in attributes
    assert send.status.status_code is StatusCode.UNSET
    assert send.parent is not None
    assert send.parent.span_id == step_span(spans, "sending").context.span_id

    (read,) = captured.named("whatsapp mark_read")
    assert attributes_of(read)["http.response.status_code"] == 200
    assert read.parent is not None
    assert read.parent.span_id == step_span(spans, "deduped").context.span_id
    assert captured.points("pyloto.send.errors") == {}
    for span in spans:
        assert SENDER not in span.to_json()
        assert CONTACT_NAME not in span.to_json()


async def test_a_permanent_graph_error_is_a_failed_span_and_a_send_error_count(
    open_app: OpenApp, captured: Captured, graph: FakeGraph
) -> None:
    """Graph refusing a send with 131047 (outside the 24-hour window) gives a `whatsapp
    send` span with pyloto.whatsapp.error_code "131047", error.type "131047", the HTTP 400
    and an error status; pyloto.send.errors counts it by code; the record is failed."""
    graph.inject(Fault(code=131047))
    async with open_app(**graph_variables(graph)) as app:
        view = await run_message(app, "Ainda estão abertos?")
    assert view["state"] == "failed"
    assert graph.sends == []

    (send,) = captured.named("whatsapp send")
    attributes = attributes_of(send)
    assert attributes["pyloto.whatsapp.error_code"] == "131047"
    assert attributes["error.type"] == "131047"
    assert attributes["http.response.status_code"] == 400
    assert send.status.status_code is StatusCode.ERROR
    assert send.status.description == "131047"
    assert "Re-engagement" not in json.dumps(every_text(send)), "Graph's message stays out"
    step = step_span(captured.spans(), "sending")
    assert attributes_of(step)["pyloto.outcome"] == "failed"
    assert captured.points("pyloto.send.errors") == {(("pyloto.whatsapp.error_code", "131047"),): 1}


async def test_a_5xx_without_a_graph_code_is_counted_by_status_and_the_retry_sends(
    open_app: OpenApp, captured: Captured, graph: FakeGraph
) -> None:
    """A bare 503 is labelled `http_503` on its span and in pyloto.send.errors; it proves
    nothing about the send, so the claim is kept and, with no status webhook within the
    reconcile window, the send is made once more: the second `whatsapp send` span succeeds
    with 200."""
    graph.inject(Fault(status=503))
    waits = {
        "WHATSAPP_RECONCILE_SECONDS": "1",
        "LOCAL_QUEUE_MIN_BACKOFF_SECONDS": "0.3",
        "LOCAL_QUEUE_MAX_BACKOFF_SECONDS": "1.0",
    }
    async with open_app(**graph_variables(graph), **waits) as app:
        view = await run_message(app, "Vocês abrem amanhã?")
    assert view["state"] == "sent"
    triggers = [h["trigger"] for h in view["history"]]
    assert triggers[-4:] == ["claim_send", "send_unknown", "claim_send", "send"]

    failed, succeeded = captured.named("whatsapp send")
    assert attributes_of(failed)["pyloto.whatsapp.error_code"] == "http_503"
    assert attributes_of(failed)["http.response.status_code"] == 503
    assert failed.status.status_code is StatusCode.ERROR
    assert attributes_of(succeeded)["http.response.status_code"] == 200
    assert succeeded.status.status_code is StatusCode.UNSET
    assert captured.points("pyloto.send.errors") == {
        (("pyloto.whatsapp.error_code", "http_503"),): 1
    }


async def test_llm_and_graph_spans_of_one_message_share_its_trace_and_hashed_user(
    open_app: OpenApp, captured: Captured, fake_openai: FakeOpenAI, graph: FakeGraph
) -> None:
    """With both the LLM and Graph on, the three chat spans and the Graph spans sit in the
    message's one trace, whose step spans carry the sender only as its keyed hash."""
    async with open_app(**llm_variables(fake_openai), **graph_variables(graph)) as app:
        view = await run_message(app, QUESTION)
    assert trajectory(view) == LLM_PATH
    spans = captured.spans()
    (received,) = [span for span in spans if span.name == "message received"]
    trace_id = received.context.trace_id
    calls = [*captured.named(CHAT), *captured.named("whatsapp send")]
    calls += captured.named("whatsapp mark_read")
    assert len(calls) == 5
    assert {span.context.trace_id for span in calls} == {trace_id}
    for span in spans:
        if span.name.startswith("step "):
            assert attributes_of(span)["enduser.id"] == keyed_hash(SENDER, HASH_KEY)
        assert SENDER not in span.to_json()
