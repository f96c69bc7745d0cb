"""Trace shape: one trace per message, one span per transition, parents across task callbacks.

The container is built with the real SDK from the repository's otel.yaml; only the exporter is
an in-memory one, behind the same redacting wrapper production uses, so what the tests read is
what Cloud Trace would receive.
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

import pytest
from litestar.testing import AsyncTestClient
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import SpanKind, format_span_id, format_trace_id

from pyloto_corp.bootstrap import bootstrap
from pyloto_corp.config import Settings
from pyloto_corp.http.app import create_app
from pyloto_corp.observability.otel_config import attribute_allowed
from pyloto_corp.observability.redaction import keyed_hash
from tests.e2e.support import Pyloto
from tests.support.helpers import INTERNAL_TOKEN, SENDER, envelope, text_message
from tests.support.telemetry_capture import HASH_KEY, Captured
from tests.unit.fakes import FakeQueue

pytestmark = pytest.mark.anyio

FALLBACK_PATH = ["received", "deduped", "fallback", "queued_outbound", "sending"]  # with a step


OpenApp = Callable[..., AbstractAsyncContextManager[Pyloto]]


@pytest.fixture
def open_app(make_settings: Callable[..., Settings], captured: Captured) -> OpenApp:
    """Start the app on embedded defaults with the captured telemetry."""

    @asynccontextmanager
    async def open_with(**options: Any) -> AsyncIterator[Pyloto]:
        container = bootstrap(
            make_settings(PRIVACY_HASH_KEY=HASH_KEY), telemetry=captured.runtime, **options
        )
        async with AsyncTestClient(app=create_app(container)) as client:
            yield Pyloto(client)

    return open_with


def steps_of(spans: list[ReadableSpan], trace_id: int) -> list[ReadableSpan]:
    """The step spans of one trace, in start order."""
    found = [s for s in spans if s.context.trace_id == trace_id and s.name.startswith("step ")]
    return sorted(found, key=lambda span: span.start_time or 0)


def message_span(spans: list[ReadableSpan], ref_of: str) -> ReadableSpan:
    """The `message received` span of one message."""
    from pyloto_corp.domain.privacy import message_ref

    (span,) = [
        s
        for s in spans
        if s.name == "message received"
        and (s.attributes or {}).get("pyloto.message.ref") == message_ref(ref_of)
    ]
    return span


async def test_one_message_is_one_trace_with_a_span_per_transition(
    open_app: OpenApp, captured: Captured
) -> None:
    """A message's webhook span, its `message received` span and one span per transition
    share one trace; each step is the child of the step that queued it."""
    message = text_message("Olá, quero saber o preço")
    async with open_app() as app:
        assert (await app.post(envelope([message]))).status_code == 200
        view = await app.wait_for(message["id"])
        await app.wait_idle()  # the last step has released its lease and ended its span
    assert view["state"] == "sent"

    spans = captured.spans()
    (webhook,) = [s for s in spans if s.name == "POST /webhook"]
    received = message_span(spans, message["id"])
    trace_id = webhook.context.trace_id
    assert {span.context.trace_id for span in spans} == {trace_id}, "one trace in all"
    assert webhook.parent is None
    assert webhook.kind is SpanKind.SERVER
    assert received.parent is not None
    assert received.parent.span_id == webhook.context.span_id

    steps = steps_of(spans, trace_id)
    assert [s.name for s in steps] == [f"step {state}" for state in FALLBACK_PATH]
    parent = received
    for step, (source, dest) in zip(
        steps, zip(FALLBACK_PATH, [*FALLBACK_PATH[1:], "sent"], strict=True), strict=True
    ):
        attributes = step.attributes or {}
        assert step.parent is not None
        assert step.parent.span_id == parent.context.span_id
        assert attributes["pyloto.state.from"] == source
        assert attributes["pyloto.state.to"] == dest
        assert attributes["pyloto.outcome"] == dest
        assert attributes["pyloto.attempt"] == 1
        assert isinstance(attributes["pyloto.step.duration_ms"], float)
        assert attributes["enduser.id"] == keyed_hash(SENDER, HASH_KEY)
        parent = step
    assert (steps[1].attributes or {})["pyloto.fallback.reason"] == "llm_disabled"
    assert [(s.attributes or {})["pyloto.trigger"] for s in steps] == [
        "accept",
        "fall_back",
        "queue_reply",
        "claim_send",
        "send",
    ]


async def test_the_record_keeps_the_trace_context_of_its_last_transition(
    open_app: OpenApp, captured: Captured
) -> None:
    """The stored traceparent names the last step's span: the sweeper and replays continue
    the same trace."""
    message = text_message("Bom dia")
    async with open_app() as app:
        await app.post(envelope([message]))
        await app.wait_for(message["id"])
        await app.wait_idle()
        record = await app.container.store.get(message["id"])
    assert record is not None
    last = steps_of(
        captured.spans(), message_span(captured.spans(), message["id"]).context.trace_id
    )[-1]
    context = last.context
    version, trace_id, span_id, _flags = record.trace_context["traceparent"].split("-")
    assert (version, trace_id, span_id) == (
        "00",
        format_trace_id(context.trace_id),
        format_span_id(context.span_id),
    )


async def test_a_batch_gives_each_message_a_trace_of_its_own_linked_to_the_webhook(
    open_app: OpenApp, captured: Captured
) -> None:
    """Three messages in one webhook: three traces, each rooted at its `message received`
    span, which links to the webhook's span."""
    messages = [text_message(f"mensagem {n}") for n in range(3)]
    async with open_app() as app:
        await app.post(envelope(messages))
        for message in messages:
            await app.wait_for(message["id"])
        await app.wait_idle()

    spans = captured.spans()
    (webhook,) = [s for s in spans if s.name == "POST /webhook"]
    traces = set()
    for message in messages:
        root = message_span(spans, message["id"])
        assert root.parent is None
        assert [link.context.span_id for link in root.links] == [webhook.context.span_id]
        assert len(steps_of(spans, root.context.trace_id)) == len(FALLBACK_PATH)
        traces.add(root.context.trace_id)
    assert len(traces) == 3
    assert webhook.context.trace_id not in traces


async def test_http_task_callbacks_continue_the_trace_from_the_traceparent_header(
    open_app: OpenApp, captured: Captured
) -> None:
    """Through POST /internal/tasks/advance (as Cloud Tasks calls it), each step's span is
    the child of the span named by the task's traceparent header."""
    queue = FakeQueue()
    message = text_message("Qual o horário?")
    async with open_app(queue=queue) as app:
        await app.post(envelope([message]))
        delivered = 0
        while queue.tasks:
            task = queue.tasks.pop(0)
            assert task.traceparent, "every task carries the trace"
            response = await app.client.post(
                "/internal/tasks/advance",
                json={"message_id": task.message_id, "state": task.state},
                headers={"X-Internal-Token": INTERNAL_TOKEN, "traceparent": task.traceparent},
            )
            assert response.status_code == 200, response.text
            delivered += 1
        assert delivered == len(FALLBACK_PATH) - 1  # the claim's delivery also sends
        assert (await app.view(message["id"]))["state"] == "sent"

    spans = captured.spans()
    received = message_span(spans, message["id"])
    steps = steps_of(spans, received.context.trace_id)
    assert [s.name for s in steps] == [f"step {state}" for state in FALLBACK_PATH]
    chain = [received, *steps]
    for parent, child in itertools.pairwise(chain):
        assert child.parent is not None
        assert child.parent.span_id == parent.context.span_id


async def test_a_malformed_traceparent_starts_a_new_trace_instead_of_failing(
    open_app: OpenApp, captured: Captured
) -> None:
    """A task with a garbled traceparent still runs; its span roots a trace of its own."""
    queue = FakeQueue()
    message = text_message("Oi")
    async with open_app(queue=queue) as app:
        await app.post(envelope([message]))
        task = queue.tasks.pop(0)
        response = await app.client.post(
            "/internal/tasks/advance",
            json={"message_id": task.message_id, "state": task.state},
            headers={"X-Internal-Token": INTERNAL_TOKEN, "traceparent": "00-zz-garbage-01"},
        )
        assert response.status_code == 200
    (step,) = [s for s in captured.spans() if s.name == "step received"]
    assert step.parent is None


async def test_only_allowed_attributes_leave_and_identities_are_hashed(
    open_app: OpenApp, captured: Captured
) -> None:
    """Every exported attribute key is on otel.yaml's allow-list; the sender's number is in
    no exported value, only its keyed hash."""
    message = text_message("Meu e-mail é maria@exemplo.com.br")
    async with open_app() as app:
        await app.post(envelope([message]))
        await app.wait_for(message["id"])
        await app.wait_idle()
    allowed = captured.config.redaction.allowed_attributes
    for span in captured.spans():
        for key, value in (span.attributes or {}).items():
            assert attribute_allowed(key, allowed), key
            assert SENDER not in str(value)
        for key in span.resource.attributes:
            assert attribute_allowed(key, allowed), key


async def test_metrics_count_webhooks_steps_and_fallbacks(
    open_app: OpenApp, captured: Captured
) -> None:
    """A stored message, its redelivery and a bad signature show up in the metrics: webhook
    latency by status, a dedupe hit, the fallback by reason and a step latency per state."""
    message = text_message("Olá")
    async with open_app() as app:
        await app.post(envelope([message]))
        await app.post(envelope([message]))
        assert (await app.post(envelope([message]), headers={})).status_code == 401
        await app.wait_for(message["id"])
        await app.wait_idle()

    statuses = {
        point.attributes["http.response.status_code"]: point.count
        for point in captured.metric_points("pyloto.webhook.duration")
    }
    assert statuses == {200: 2, 401: 1}
    assert sum(p.value for p in captured.metric_points("pyloto.dedupe.hits")) == 1
    assert sum(p.value for p in captured.metric_points("pyloto.messages.received")) == 1
    (fallback,) = captured.metric_points("pyloto.fallbacks")
    assert fallback.attributes == {"pyloto.fallback.reason": "llm_disabled"}
    assert fallback.value == 1
    step_states = {
        p.attributes["pyloto.state"] for p in captured.metric_points("pyloto.step.duration")
    }
    assert set(FALLBACK_PATH) <= step_states
